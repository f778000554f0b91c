// Package pandadocauth gives any http.Client PandaDoc OAuth 2.0
// authentication: a TokenSource backed by PandaDoc's token endpoint
// (POST https://api.pandadoc.com/oauth2/access_token) and a Transport that
// attaches "Authorization: Bearer …" to every request.
//
// Wrap an existing client in a few lines:
//
//	conf := &pandadocauth.Config{ClientID: id, ClientSecret: secret}
//	src := &pandadocauth.TokenSource{
//		Config: conf,
//		Store:  &pandadocauth.FileStore{Path: "token.json"}, // holds the grant's token
//	}
//	client := pandadocauth.NewClient(existingClient, src)
//	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
//
// Get the first token with Config.AuthCodeURL and Config.Exchange (or the
// pandadoc-oauth command's login).
//
// # Guarantees
//
//   - A valid cached token is served without locks, network or
//     allocation; the header value is built once per token.
//   - Concurrent callers that find the token expired cause one refresh,
//     and share its result, success or failure.
//   - A caller whose context ends stops waiting at once; the shared
//     refresh goes on for the others.
//   - Shortly before expiry (TokenSource.EarlyRefresh) one background
//     refresh runs while the current token is still served;
//     TokenSource.Wait lets a short-lived program finish it, and the
//     retry of a failed Save, before exit.
//   - Transient token-endpoint failures are retried (3 attempts, backoff
//     with jitter, Retry-After honoured; a 429 without Retry-After backs
//     off in seconds); permanent ones are returned as errors wrapping
//     *oauth2.RetrieveError and remembered briefly, so callers fail fast
//     instead of hammering the endpoint.
//   - Every new token, with its refresh token, is saved to the Store
//     before any request uses it; a failed Save is retried on a timer
//     while the Locker's lock stays held, and the newest refresh token is
//     never dropped, not even from a refused answer. PandaDoc may rotate
//     refresh tokens (OAuth servers commonly do); this is safe either
//     way.
//   - A token another process stored since this source last read or
//     wrote the Store is newer, whatever the clocks say, and is adopted;
//     with a Locker, processes refresh one at a time, and a Load that
//     fails under the lock fails the refresh.
//   - A refresh token seen rotated away is never presented again, even
//     when the Store rolls back to it. The one window no client can close
//     is a process dying between the endpoint's answer and its Save.
//   - A 401 from the API invalidates the exact token it rejected (a late
//     401 cannot discard a newer token), triggers one refresh, and
//     replays the request once when its body allows; when that refresh
//     fails, RoundTrip returns its error. Transport does this
//     with any Source that is an Invalidator; a plain oauth2.TokenSource
//     wrapped around a TokenSource (oauth2.ReuseTokenSource) loses it.
//   - No token is sent to another origin (scheme, host, port) than the
//     one a request chain started at, nor over plain http:// except to
//     loopback.
//   - No client secret, refresh token or access token appears in an
//     error, a log line, an Observer event or a String method.
//
// Grants serves many grants (one per customer workspace) from one
// process, with the same guarantees per grant. Observer reports
// refreshes, 401s and Store problems for metrics and tracing. Limiter,
// below the authenticating RoundTripper, keeps requests under PandaDoc's
// rate limits, and retries only what is safe to send again.
package pandadocauth
