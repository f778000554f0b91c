// Package pandadoctest provides a fake PandaDoc for tests, in the manner
// of net/http/httptest: a loopback server that speaks PandaDoc's OAuth 2.0
// endpoints and a few of its API routes, with knobs to expire, revoke and
// rotate tokens and to script failures of the token endpoint.
//
// A test starts a server, points a client at it and closes it:
//
//	srv := pandadoctest.NewServer()
//	defer srv.Close()
//
//	cfg := srv.Config()     // a *pandadocauth.Config aimed at srv
//	tok := srv.IssueToken() // a grant, without the browser
//
//	srv.FailNext(pandadoctest.Status(503)) // the next token POST fails
//	srv.ExpireAll()                        // every access token expires
//
//	client := cfg.Client(tok)
//	resp, err := client.Get(srv.URL + "/public/v1/documents")
//
// The server answers:
//
//   - GET /oauth2/authorize: checks client_id, redirect_uri and
//     response_type=code, then redirects to the redirect URI with a
//     single-use code and the caller's state (or with
//     error=access_denied when consent is denied). A registered redirect
//     URI on a loopback IP address, such as DefaultRedirectURL, matches
//     on any port (RFC 8252 section 7.3), so a test can listen on a port
//     the system picks. A PKCE code_challenge (S256 or plain, RFC 7636)
//     is remembered with the code.
//   - POST /oauth2/access_token: the authorization_code and refresh_token
//     grants, with the client credentials in the form body, answering
//     PandaDoc's token JSON or an RFC 6749 error. A code issued with a
//     code_challenge needs the matching code_verifier (else
//     invalid_grant).
//   - /public/v1/...: GET and POST /public/v1/documents, for a current
//     Bearer access token or the configured API key, else 401 with
//     PandaDoc's authentication_error body; and a route of every class
//     of PandaDoc's rate limits (routes.go): a document's status,
//     details, send, downloads and delete, an upload (?upload),
//     templates, content-library items, and POST
//     /public/v2/notary/notarization-requests.
//   - Rate limits as PandaDoc's, when asked (WithRateLimits): per user,
//     per class, over a sliding window, with PandaDoc's 429; and, always,
//     MaxInWindow, the most requests of a class that arrived from one
//     user in any window.
//
// Tests wait on signals, not on time: HoldTokenRequests holds token
// POSTs at a gate until ReleaseTokenRequests, and WaitTokenRequests,
// WaitHeldTokenRequests and WaitAPIRequests return when requests have
// arrived. Every grant is counted apart (GrantTokenRequests,
// LiveRefreshToken), so one server serves many grants at once.
//
// The other direction too: a WebhookSender delivers webhooks to a test's
// server as PandaDoc does (a JSON array of events, signed in the
// "signature" query parameter, an X-PandaDoc-Webhook-Event-Id, retries
// on failure, a subscription disabled by a 410), with payloads built by
// DocumentStateChanged and RecipientCompleted; NewWebhookRequest builds
// one for a handler's ServeHTTP.
//
// Guarantees: tokens and codes are 160 random bits from crypto/rand; no
// error body echoes a secret; a Server is safe for concurrent use; Close releases
// every request that a fault holds and returns only when all handlers
// have ended, leaving no goroutine behind.
package pandadoctest
