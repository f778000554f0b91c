package pandadoctest

import "time"

// DefaultClientID is the client ID a Server accepts unless WithClient
// says otherwise.
const DefaultClientID = "pandadoctest-client-id"

// DefaultClientSecret is the client secret a Server accepts unless
// WithClient says otherwise.
const DefaultClientSecret = "pandadoctest-client-secret"

// DefaultRedirectURL is the redirect URI a Server accepts unless
// WithRedirectURL says otherwise.
const DefaultRedirectURL = "http://127.0.0.1:8765/callback"

// DefaultExpiresIn is the lifetime of an access token in seconds, as
// PandaDoc announces it in expires_in: one year less one second.
const DefaultExpiresIn = 31535999

// An Option configures a Server in NewServer.
type Option func(*Server)

// WithTLS makes NewServer start an HTTPS server with a self-signed
// certificate, like httptest.NewTLSServer. Config and Client return
// clients that trust it.
func WithTLS() Option {
	return func(s *Server) { s.tls = true }
}

// WithClient sets the only client ID and secret the server accepts.
func WithClient(id, secret string) Option {
	return func(s *Server) { s.opts.ClientID, s.opts.ClientSecret = id, secret }
}

// WithRedirectURL sets the only redirect URI the server accepts.
func WithRedirectURL(u string) Option {
	return func(s *Server) { s.opts.RedirectURL = u }
}

// WithExpiresIn sets the lifetime, in seconds, of the access tokens the
// server issues. 0 or less issues tokens that are already expired; see
// Server.SetExpiresIn.
func WithExpiresIn(seconds int) Option {
	return func(s *Server) { s.opts.ExpiresIn = seconds }
}

// WithRotation turns refresh-token rotation on or off; it is off by
// default. See Server.SetRotation.
func WithRotation(on bool) Option {
	return func(s *Server) { s.opts.Rotation = on }
}

// WithReuseDetection makes the token endpoint revoke a grant when a
// refresh token that rotation replaced is presented again, as OAuth 2.1
// recommends: its live refresh token stops working too. It acts with
// rotation on (WithRotation). See Server.ReusedRefreshTokens.
func WithReuseDetection() Option { return func(s *Server) { s.opts.ReuseDetection = true } }

// WithAPIKey makes the API routes accept "Authorization: API-Key key" as
// well as Bearer access tokens. An empty key accepts no API key, which is
// the default.
func WithAPIKey(key string) Option {
	return func(s *Server) { s.apiKey = key }
}

// WithDenyConsent makes the authorization endpoint deny consent. See
// Server.SetDenyConsent.
func WithDenyConsent() Option {
	return func(s *Server) { s.opts.DenyConsent = true }
}

// WithClock makes the server read the time from now instead of
// time.Now, for the expiry of the tokens it issues and checks. Tests that
// inject a clock into their client can then move both together.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}
