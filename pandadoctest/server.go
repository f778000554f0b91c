package pandadoctest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// clientTimeout bounds every request of the clients that Config and
// Client return, so a test against a hanging fault cannot hang itself.
const clientTimeout = 10 * time.Second

// A Server is a fake PandaDoc listening on a loopback address. Start one
// with NewServer and stop it with Close.
//
// Its methods are safe for concurrent use by multiple goroutines, and
// with the requests it is serving: a knob turned during a test takes
// effect from the next request on.
type Server struct {
	// URL is the base URL of the server, such as http://127.0.0.1:41234,
	// with no trailing slash.
	URL string

	ts *httptest.Server

	// eng is the OAuth endpoints: the grants, the faults, the gate and
	// the token counters.
	eng *fakepandadoc.Server

	// Set by NewServer and read-only afterwards.
	tls    bool
	opts   fakepandadoc.Options // what the options ask of eng
	apiKey string
	now    func() time.Time

	// closing is canceled by Close, to end WaitAPIRequests; eng releases
	// the token requests it holds.
	closing context.Context
	stop    context.CancelFunc

	mu sync.Mutex // guards the fields below: the documents, the API counters and the throttle

	docs        []document  // documents created through the API, oldest first
	apiRequests map[int]int // API requests by answered status
	apiTotal    int
	changed     fakepandadoc.Changes // an API counter changed; guarded by mu

	throttle *throttle // the rate limits and their logs; see throttle.go
}

// NewServer starts and returns a new Server, by default over plain HTTP
// with DefaultClientID, DefaultClientSecret, DefaultRedirectURL,
// DefaultExpiresIn, no refresh-token rotation, no API key and automatic
// consent. The caller must call Close when finished, to shut it down.
func NewServer(opts ...Option) *Server {
	s := &Server{
		opts: fakepandadoc.Options{
			ClientID:     DefaultClientID,
			ClientSecret: DefaultClientSecret,
			RedirectURL:  DefaultRedirectURL,
			ExpiresIn:    DefaultExpiresIn,
		},
		now:         time.Now,
		apiRequests: make(map[int]int),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.opts.Now = s.now
	s.eng = fakepandadoc.New(s.opts)
	s.closing, s.stop = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	mux.Handle("GET /oauth2/authorize", s.eng)
	mux.Handle("POST /oauth2/access_token", s.eng)
	mux.HandleFunc("/public/v1/", s.serveAPI)
	mux.HandleFunc("/public/v2/", s.serveAPI)
	s.ts = httptest.NewUnstartedServer(mux)
	s.ts.Config.ConnContext = fakepandadoc.ConnContext
	if s.tls {
		s.ts.StartTLS()
	} else {
		s.ts.Start()
	}
	s.URL = s.ts.URL
	return s
}

// Close shuts down the server: it releases the requests that faults hold
// (a hanging or delayed request loses its connection), then blocks until
// every request has ended, like httptest.Server.Close. It also closes the
// idle connections of the clients that Config and Client return. Calling
// Close again does nothing.
func (s *Server) Close() {
	s.stop()
	s.eng.Close()
	s.ts.Close()
}

// Client returns an HTTP client that trusts the server's certificate
// (with WithTLS) and adds no authentication. It has a 10-second timeout,
// follows redirects like any http.Client and shares its connections with
// the other clients of s, which Close closes.
func (s *Server) Client() *http.Client {
	return &http.Client{Transport: s.ts.Client().Transport, Timeout: clientTimeout}
}

// Config returns a pandadocauth.Config aimed at the server: its client
// ID, secret and redirect URL, its token and authorization URLs, and
// Client() as its HTTPClient.
func (s *Server) Config() *pandadocauth.Config {
	return &pandadocauth.Config{
		ClientID:     s.opts.ClientID,
		ClientSecret: s.opts.ClientSecret,
		RedirectURL:  s.opts.RedirectURL,
		TokenURL:     s.URL + "/oauth2/access_token",
		AuthURL:      s.URL + "/oauth2/authorize",
		HTTPClient:   s.Client(),
	}
}

// IssueToken starts a new grant without the authorization dance and
// returns its token as the token endpoint would: a fresh access token
// with its Expiry, and a fresh refresh token. Expiry is when the server
// stops accepting the access token, so with a lifetime of 0 or less
// (WithExpiresIn, SetExpiresIn) the token has already expired: a client
// refreshes it before sending it.
func (s *Server) IssueToken() *oauth2.Token {
	return s.eng.IssueToken()
}

// IssueCode returns a new authorization code for the configured redirect
// URL, as an approved consent would, for a test of the
// authorization_code grant that skips GET /oauth2/authorize.
func (s *Server) IssueCode() string {
	return s.eng.IssueCode()
}

// Revoke makes token stop working at once, whether it is an access token
// or a refresh token. Unknown tokens are ignored.
func (s *Server) Revoke(token string) {
	s.eng.Revoke(token)
}

// ExpireAll makes every access token issued so far expire at once, as if
// its lifetime had passed. Refresh tokens keep working, and tokens issued
// afterwards are not affected.
func (s *Server) ExpireAll() {
	s.eng.ExpireAll()
}

// SetExpiresIn sets the lifetime, in seconds, of the access tokens issued
// from now on, which the token endpoint announces as expires_in. A
// lifetime of 0 or less issues tokens that are expired at once: the API
// refuses them, and IssueToken returns them with an Expiry that has
// passed. The token endpoint announces such a lifetime as it is, and
// clients (golang.org/x/oauth2 and pandadocauth) read expires_in 0 as
// "no expiry known": they find out from the API's 401.
func (s *Server) SetExpiresIn(seconds int) {
	s.eng.SetExpiresIn(seconds)
}

// SetRotation turns refresh-token rotation on or off. With rotation on,
// every refresh_token grant answers a new refresh token and the one it
// used stops working (invalid_grant). With rotation off, a refresh token
// keeps working and the grant answers it again.
func (s *Server) SetRotation(on bool) {
	s.eng.SetRotation(on)
}

// SetDenyConsent makes the authorization endpoint deny consent (redirect
// with error=access_denied) or grant it (redirect with a code).
func (s *Server) SetDenyConsent(deny bool) {
	s.eng.SetDenyConsent(deny)
}

// RefreshTokens returns the refresh tokens that still work, oldest first:
// the last one is the newest.
func (s *Server) RefreshTokens() []string {
	return s.eng.RefreshTokens()
}

// FailNext queues faults for the token endpoint: each POST to
// /oauth2/access_token consumes the first queued fault, whatever its
// grant, until the queue is empty. For example, "503, then success" is
//
//	srv.FailNext(pandadoctest.Status(503))
func (s *Server) FailNext(faults ...Fault) {
	fs := make([]fakepandadoc.Fault, len(faults))
	for i, f := range faults {
		fs[i] = f.engine()
	}
	s.eng.FailNext(fs...)
}

// FailAlways makes every token POST that finds no queued fault answer f,
// until ClearFaults.
func (s *Server) FailAlways(f Fault) {
	s.eng.FailAlways(f.engine())
}

// ClearFaults drops the queued faults and the one set by FailAlways.
func (s *Server) ClearFaults() {
	s.eng.ClearFaults()
}

// PendingFaults returns how many queued faults are not consumed yet.
func (s *Server) PendingFaults() int {
	return s.eng.PendingFaults()
}

// TokenRequests returns how many POSTs the token endpoint has received
// with grantType as their grant_type ("" counts those without one),
// faulted or not.
func (s *Server) TokenRequests(grantType string) int {
	return s.eng.TokenRequests(grantType)
}

// TotalTokenRequests returns how many POSTs the token endpoint has
// received.
func (s *Server) TotalTokenRequests() int {
	return s.eng.TotalTokenRequests()
}

// APIRequests returns how many requests to /public/v1/ were answered
// with status.
func (s *Server) APIRequests(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiRequests[status]
}

// TotalAPIRequests returns how many requests to /public/v1/ were
// answered.
func (s *Server) TotalAPIRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiTotal
}

// closedError returns ErrClosed for the engine's ErrClosed, else err.
func closedError(err error) error {
	if errors.Is(err, fakepandadoc.ErrClosed) {
		return ErrClosed
	}
	return err
}
