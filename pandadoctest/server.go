package pandadoctest

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// clientTimeout bounds every request of the clients that Config and
// Client return, so a test against a hanging fault cannot hang itself.
const clientTimeout = 10 * time.Second

// scope is the scope PandaDoc announces in its token responses.
const scope = "read+write"

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

	// Set by NewServer and read-only afterwards.
	tls          bool
	clientID     string
	clientSecret string
	redirectURL  string
	apiKey       string
	now          func() time.Time

	// closing is canceled by Close, to release the requests that faults
	// hold.
	closing context.Context
	stop    context.CancelFunc

	mu sync.Mutex // guards the fields below: the knobs, the grants, the faults and the counters

	expiresIn   int
	rotation    bool
	denyConsent bool
	reuse       reuseDetection // reuse.go

	codes   map[string]*authCode    // unused authorization code -> its request
	access  map[string]*accessGrant // access token -> its state
	refresh map[string]uint64       // live refresh token -> issue sequence number
	seq     uint64                  // last issue sequence number
	grants  map[string]*grant       // every refresh token issued, live or not -> its grant
	docs    []document              // documents created through the API, oldest first

	faults []Fault // queued by FailNext, consumed one per token POST
	always *Fault  // set by FailAlways, used when faults is empty

	tokenRequests map[string]int // token POSTs by grant_type, "" for none
	tokenTotal    int
	apiRequests   map[int]int // API requests by answered status
	apiTotal      int

	gate    chan struct{} // closed by ReleaseTokenRequests; nil while token POSTs are not held
	held    int           // token POSTs waiting at gate
	changed chan struct{} // closed and replaced when a counter or held changes

	throttle *throttle // the rate limits and their logs; see throttle.go
}

// A grant is one authorization: a chain of refresh tokens, each replacing
// the one before it when rotation is on.
type grant struct {
	live          string // the refresh token that works, "" once revoked
	tokenRequests int    // refresh_token POSTs with any of its refresh tokens
}

// authCode is the authorization request an unused code answers.
type authCode struct {
	redirect        string // redirect_uri it was issued for
	challenge       string // PKCE code_challenge, "" without PKCE
	challengeMethod string // "S256" or "plain"
}

// accessGrant is the state of one access token.
type accessGrant struct {
	expiry  time.Time
	expired bool   // set by ExpireAll
	user    *grant // the grant it was issued for: the user rate limits count
}

// NewServer starts and returns a new Server, by default over plain HTTP
// with DefaultClientID, DefaultClientSecret, DefaultRedirectURL,
// DefaultExpiresIn, no refresh-token rotation, no API key and automatic
// consent. The caller must call Close when finished, to shut it down.
func NewServer(opts ...Option) *Server {
	s := &Server{
		clientID:      DefaultClientID,
		clientSecret:  DefaultClientSecret,
		redirectURL:   DefaultRedirectURL,
		now:           time.Now,
		expiresIn:     DefaultExpiresIn,
		codes:         make(map[string]*authCode),
		access:        make(map[string]*accessGrant),
		refresh:       make(map[string]uint64),
		grants:        make(map[string]*grant),
		changed:       make(chan struct{}),
		tokenRequests: make(map[string]int),
		apiRequests:   make(map[int]int),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.closing, s.stop = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth2/authorize", s.serveAuthorize)
	mux.HandleFunc("POST /oauth2/access_token", s.serveToken)
	mux.HandleFunc("/public/v1/", s.serveAPI)
	mux.HandleFunc("/public/v2/", s.serveAPI)
	s.ts = httptest.NewUnstartedServer(mux)
	s.ts.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	if s.tls {
		s.ts.StartTLS()
	} else {
		s.ts.Start()
	}
	s.URL = s.ts.URL
	return s
}

// connKey is the request context key of the connection a request came
// on.
type connKey struct{}

// closeConn closes the network connection that r came on, under its TLS
// layer if any: unlike closing the TLS connection, which first sends a
// close_notify alert and may wait seconds for a client that reads
// nothing, it returns at once.
func closeConn(r *http.Request) {
	c, ok := r.Context().Value(connKey{}).(net.Conn)
	if !ok {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	c.Close()
}

// Close shuts down the server: it releases the requests that faults hold
// (a hanging or delayed request loses its connection), then blocks until
// every request has ended, like httptest.Server.Close. It also closes the
// idle connections of the clients that Config and Client return. Calling
// Close again does nothing.
func (s *Server) Close() {
	s.stop()
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
		ClientID:     s.clientID,
		ClientSecret: s.clientSecret,
		RedirectURL:  s.redirectURL,
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
	now := s.now()
	s.mu.Lock()
	resp := s.mintLocked("", now)
	s.mu.Unlock()
	return resp.oauth2Token(now)
}

// IssueCode returns a new authorization code for the configured redirect
// URL, as an approved consent would, for a test of the
// authorization_code grant that skips GET /oauth2/authorize.
func (s *Server) IssueCode() string {
	code := randomToken()
	s.mu.Lock()
	s.codes[code] = &authCode{redirect: s.redirectURL}
	s.mu.Unlock()
	return code
}

// Revoke makes token stop working at once, whether it is an access token
// or a refresh token. Unknown tokens are ignored.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.access, token)
	if _, ok := s.refresh[token]; ok {
		delete(s.refresh, token)
		s.grants[token].live = ""
	}
}

// ExpireAll makes every access token issued so far expire at once, as if
// its lifetime had passed. Refresh tokens keep working, and tokens issued
// afterwards are not affected.
func (s *Server) ExpireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.access {
		g.expired = true
	}
}

// SetExpiresIn sets the lifetime, in seconds, of the access tokens issued
// from now on, which the token endpoint announces as expires_in. A
// lifetime of 0 or less issues tokens that are expired at once: the API
// refuses them, and IssueToken returns them with an Expiry that has
// passed. The token endpoint announces such a lifetime as it is, and
// clients (golang.org/x/oauth2 and pandadocauth) read expires_in 0 as
// "no expiry known": they find out from the API's 401.
func (s *Server) SetExpiresIn(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = seconds
}

// SetRotation turns refresh-token rotation on or off. With rotation on,
// every refresh_token grant answers a new refresh token and the one it
// used stops working (invalid_grant). With rotation off, a refresh token
// keeps working and the grant answers it again.
func (s *Server) SetRotation(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotation = on
}

// SetDenyConsent makes the authorization endpoint deny consent (redirect
// with error=access_denied) or grant it (redirect with a code).
func (s *Server) SetDenyConsent(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denyConsent = deny
}

// RefreshTokens returns the refresh tokens that still work, oldest first:
// the last one is the newest.
func (s *Server) RefreshTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	toks := make([]string, 0, len(s.refresh))
	for t := range s.refresh {
		toks = append(toks, t)
	}
	slices.SortFunc(toks, func(a, b string) int {
		return cmp.Compare(s.refresh[a], s.refresh[b])
	})
	return toks
}

// FailNext queues faults for the token endpoint: each POST to
// /oauth2/access_token consumes the first queued fault, whatever its
// grant, until the queue is empty. For example, "503, then success" is
//
//	srv.FailNext(pandadoctest.Status(503))
func (s *Server) FailNext(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// FailAlways makes every token POST that finds no queued fault answer f,
// until ClearFaults.
func (s *Server) FailAlways(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.always = &f
}

// ClearFaults drops the queued faults and the one set by FailAlways.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.always = nil
}

// PendingFaults returns how many queued faults are not consumed yet.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// TokenRequests returns how many POSTs the token endpoint has received
// with grantType as their grant_type ("" counts those without one),
// faulted or not.
func (s *Server) TokenRequests(grantType string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests[grantType]
}

// TotalTokenRequests returns how many POSTs the token endpoint has
// received.
func (s *Server) TotalTokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenTotal
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

// tokenResponse is the token endpoint's JSON, in PandaDoc's field order.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token"`
}

// oauth2Token converts r, issued at now, as golang.org/x/oauth2 would,
// but for a lifetime of 0 or less, which x/oauth2 would read as no
// expiry: Expiry is when the server stops accepting the token, now or
// before.
func (r *tokenResponse) oauth2Token(now time.Time) *oauth2.Token {
	t := &oauth2.Token{
		AccessToken:  r.AccessToken,
		TokenType:    r.TokenType,
		RefreshToken: r.RefreshToken,
		ExpiresIn:    int64(r.ExpiresIn),
		Expiry:       now.Add(time.Duration(r.ExpiresIn) * time.Second),
	}
	return t.WithExtra(map[string]any{
		"access_token":  r.AccessToken,
		"token_type":    r.TokenType,
		"expires_in":    float64(r.ExpiresIn),
		"scope":         r.Scope,
		"refresh_token": r.RefreshToken,
	})
}

// mintLocked issues, at now, a new access token for the grant of
// refreshToken, or for a new grant with a new refresh token when
// refreshToken is empty. s.mu must be held.
func (s *Server) mintLocked(refreshToken string, now time.Time) *tokenResponse {
	if refreshToken == "" {
		refreshToken = s.newRefreshLocked(&grant{})
	}
	at := randomToken()
	s.access[at] = &accessGrant{expiry: now.Add(time.Duration(s.expiresIn) * time.Second), user: s.grants[refreshToken]}
	return &tokenResponse{
		AccessToken:  at,
		TokenType:    "Bearer",
		ExpiresIn:    s.expiresIn,
		Scope:        scope,
		RefreshToken: refreshToken,
	}
}

// newRefreshLocked issues a new refresh token for g, which becomes its
// live one. s.mu must be held.
func (s *Server) newRefreshLocked(g *grant) string {
	rt := randomToken()
	s.seq++
	s.refresh[rt] = s.seq
	s.grants[rt] = g
	g.live = rt
	return rt
}

// validAccessToken reports whether tok is a current access token.
func (s *Server) validAccessToken(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.access[tok]
	return g != nil && !g.expired && s.now().Before(g.expiry)
}

// randomToken returns 160 random bits in hex, the shape of PandaDoc's
// tokens.
func randomToken() string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic("pandadoctest: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}
