// Package fakepandadoc is the engine of a fake PandaDoc OAuth 2.0
// server: the authorization and token endpoints, with their grants,
// refresh-token rotation, reuse detection, scripted faults, the gate
// that holds token requests, and the counters and records tests wait
// on.
//
// It does not import the module's root package, so the root's internal
// tests and the public pandadoctest package serve from the same engine:
// pandadoctest wraps it in a loopback server with PandaDoc's API routes,
// and the root's tests call it in memory (RoundTrip), on their fake
// clock (Options.Now).
package fakepandadoc

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// scope is the scope PandaDoc announces in its token responses.
const scope = "read+write"

// Options configure a Server. The zero value is a server that accepts
// an empty client ID and secret, issues random tokens that expire at
// once, does not rotate refresh tokens and reads time.Now.
type Options struct {
	// ClientID and ClientSecret are the only client credentials the
	// token endpoint accepts.
	ClientID, ClientSecret string

	// RedirectURL is the registered redirect URI; see the authorization
	// endpoint.
	RedirectURL string

	// ExpiresIn is the lifetime in seconds of the access tokens issued;
	// see Server.SetExpiresIn.
	ExpiresIn int

	// Rotation turns refresh-token rotation on; see Server.SetRotation.
	Rotation bool

	// ReuseDetection revokes a grant whose rotated-away refresh token is
	// presented again (with Rotation on).
	ReuseDetection bool

	// DenyConsent makes the authorization endpoint deny consent.
	DenyConsent bool

	// OmitRefreshToken leaves refresh_token out of a refresh_token
	// grant's answer that does not rotate, as servers that keep the
	// refresh token may (RFC 6749 section 5.1 makes it optional).
	OmitRefreshToken bool

	// Now is the clock of token expiry; nil means time.Now.
	Now func() time.Time

	// TokenName, if set, names the tokens the server issues instead of
	// 160 random bits: kind is AccessToken or RefreshToken, grant the
	// grant's name (AddGrant; "grant<N>" for the Nth grant made
	// otherwise) and n the grant's issue number, from 1 (or from
	// AddGrant's issued+1). An access token and the refresh token rotated
	// with it have the same n. Names must be unique.
	TokenName func(kind TokenKind, grant string, n int) string
}

// A TokenKind is the kind of a token TokenName names.
type TokenKind string

// The kinds of tokens, by their usual abbreviations.
const (
	AccessToken  TokenKind = "at"
	RefreshToken TokenKind = "rt"
)

// A TokenPost is the record of one POST to the token endpoint, as it
// arrived.
type TokenPost struct {
	Form   url.Values  // the form body; empty for a body that is not a form
	Header http.Header // the request's headers
	At     time.Time   // when it arrived, by Options.Now
}

// A Server is the state of a fake PandaDoc's OAuth endpoints. Serve it
// with ServeHTTP or RoundTrip; New makes one. Its methods are safe for
// concurrent use, also with the requests it serves.
type Server struct {
	// Set by New and read-only afterwards.
	opts Options
	now  func() time.Time
	mux  *http.ServeMux

	// closing is canceled by Close, to release the requests that faults
	// and the gate hold and the Wait methods.
	closing context.Context
	stop    context.CancelFunc

	mu sync.Mutex // guards the fields below: the knobs, the grants, the faults, the counters and records

	expiresIn   int
	rotation    bool
	denyConsent bool
	reuses      int // refresh tokens presented after rotation replaced them, with reuse detection

	codes   map[string]*authCode    // unused authorization code -> its request
	access  map[string]*accessGrant // access token -> its state
	refresh map[string]uint64       // live refresh token -> issue sequence number
	seq     uint64                  // last issue sequence number
	grants  map[string]*grant       // every refresh token issued, live or not -> its grant
	ngrants int                     // grants made, for their default names

	faults []Fault // queued by FailNext, consumed one per token POST
	always *Fault  // set by FailAlways, used when faults is empty

	tokenRequests map[string]int // token POSTs by grant_type, "" for none
	posts         []TokenPost    // every token POST, in arrival order
	inFlight      int            // token POSTs arrived and not answered yet
	maxInFlight   int            // the most of inFlight at once

	gate    chan struct{} // closed by ReleaseTokenRequests; nil while token POSTs are not held
	held    int           // token POSTs waiting at gate
	pass    chan struct{} // a send lets one held token POST through; read-only field
	changed Changes       // a counter or held changed; guarded by mu
}

// A grant is one authorization: a chain of refresh tokens, each replacing
// the one before it when rotation is on.
type grant struct {
	name          string
	issued        int    // access tokens issued for it
	live          string // the refresh token that works, "" once revoked
	tokenRequests int    // refresh_token POSTs with any of its refresh tokens
}

// accessGrant is the state of one access token.
type accessGrant struct {
	expiry  time.Time
	expired bool   // set by ExpireAll
	user    *grant // the grant it was issued for
}

// New returns a Server configured by opts. Close releases what it
// holds.
func New(opts Options) *Server {
	s := &Server{
		opts:          opts,
		now:           opts.Now,
		expiresIn:     opts.ExpiresIn,
		rotation:      opts.Rotation,
		denyConsent:   opts.DenyConsent,
		codes:         make(map[string]*authCode),
		access:        make(map[string]*accessGrant),
		refresh:       make(map[string]uint64),
		grants:        make(map[string]*grant),
		pass:          make(chan struct{}),
		tokenRequests: make(map[string]int),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /oauth2/authorize", s.serveAuthorize)
	s.mux.HandleFunc("POST /oauth2/access_token", s.serveToken)
	return s
}

// ServeHTTP serves GET /oauth2/authorize and POST /oauth2/access_token,
// and answers 404 to anything else.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Close releases the requests that faults and the gate hold and makes
// the Wait methods return ErrClosed. Calling it again does nothing.
func (s *Server) Close() { s.stop() }

// IssueToken starts a new grant without the authorization dance and
// returns its token as the token endpoint would; see
// pandadoctest.Server.IssueToken.
func (s *Server) IssueToken() *oauth2.Token {
	now := s.now()
	s.mu.Lock()
	resp := s.mintLocked("", now)
	s.mu.Unlock()
	return resp.oauth2Token(now)
}

// AddGrant starts a grant named name whose live refresh token is
// refreshToken, as if it had been issued before the test as the grant's
// issue number issued, and reports false (doing nothing) if
// refreshToken is empty or taken. The grant's next tokens are named
// after name and issued+1 (Options.TokenName).
func (s *Server) AddGrant(name, refreshToken string, issued int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.grants[refreshToken]; taken || refreshToken == "" {
		return false
	}
	s.ngrants++
	g := &grant{name: name, issued: issued}
	s.seq++
	s.refresh[refreshToken] = s.seq
	s.grants[refreshToken] = g
	g.live = refreshToken
	return true
}

// Rotate carries out a refresh_token grant for refreshToken as if
// another client had posted it, without counting a POST or taking a
// fault: with rotation on, refreshToken stops working and the answer
// holds its successor. It reports false, like an invalid_grant answer,
// if refreshToken does not work (and detects reuse as a POST would).
func (s *Server) Rotate(refreshToken string) (*oauth2.Token, bool) {
	now := s.now()
	s.mu.Lock()
	resp, terr := s.refreshLocked(refreshToken, now)
	s.mu.Unlock()
	if terr != nil {
		return nil, false
	}
	return resp.oauth2Token(now), true
}

// IssueCode returns a new authorization code for the configured redirect
// URL, as an approved consent would.
func (s *Server) IssueCode() string {
	code := randomToken()
	s.mu.Lock()
	s.codes[code] = &authCode{redirect: s.opts.RedirectURL}
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

// ExpireAll makes every access token issued so far expire at once.
func (s *Server) ExpireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.access {
		g.expired = true
	}
}

// SetExpiresIn sets the lifetime, in seconds, of the access tokens issued
// from now on; 0 or less issues tokens that are expired at once.
func (s *Server) SetExpiresIn(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = seconds
}

// SetRotation turns refresh-token rotation on or off.
func (s *Server) SetRotation(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotation = on
}

// SetDenyConsent makes the authorization endpoint deny consent or grant
// it.
func (s *Server) SetDenyConsent(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denyConsent = deny
}

// RefreshTokens returns the refresh tokens that still work, oldest first.
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

// FailNext queues faults for the token endpoint: each POST consumes the
// first queued fault, whatever its grant.
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
// with grantType as their grant_type ("" counts those without one).
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
	return len(s.posts)
}

// TokenPosts returns the record of every token POST so far, in the
// order they arrived. The caller may modify the copy it gets.
func (s *Server) TokenPosts() []TokenPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenPost, len(s.posts))
	for i, p := range s.posts {
		out[i] = TokenPost{Form: cloneValues(p.Form), Header: p.Header.Clone(), At: p.At}
	}
	return out
}

// TokenPost returns the record of the i-th token POST (from 0).
func (s *Server) TokenPost(i int) TokenPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.posts[i]
	return TokenPost{Form: cloneValues(p.Form), Header: p.Header.Clone(), At: p.At}
}

// MaxConcurrentTokenRequests returns the most token POSTs that were in
// progress at once: arrived, and not answered yet.
func (s *Server) MaxConcurrentTokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// ReusedRefreshTokens returns how many grants reuse detection revoked.
func (s *Server) ReusedRefreshTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reuses
}

// GrantTokenRequests returns how many refresh_token POSTs the token
// endpoint has received for the grant that refreshToken belongs to, or 0
// for a refresh token the server never issued.
func (s *Server) GrantTokenRequests(refreshToken string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.grants[refreshToken]; g != nil {
		return g.tokenRequests
	}
	return 0
}

// LiveRefreshToken returns the refresh token that works now for the grant
// that refreshToken belongs to, or false if the server never issued
// refreshToken or the grant's live refresh token was revoked.
func (s *Server) LiveRefreshToken(refreshToken string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.grants[refreshToken]; g != nil && g.live != "" {
		return g.live, true
	}
	return "", false
}

// ValidAccessToken reports whether tok is a current access token: issued,
// not revoked, not expired.
func (s *Server) ValidAccessToken(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.access[tok]
	return g != nil && !g.expired && s.now().Before(g.expiry)
}

// UserOf returns the grant an access token was issued for, as a
// comparable value that tells grants apart, or false for an unknown
// access token.
func (s *Server) UserOf(accessToken string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.access[accessToken]; g != nil && g.user != nil {
		return g.user, true
	}
	return nil, false
}

// tokenResponse is the token endpoint's JSON, in PandaDoc's field order.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
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
	extra := map[string]any{
		"access_token": r.AccessToken,
		"token_type":   r.TokenType,
		"expires_in":   float64(r.ExpiresIn),
		"scope":        r.Scope,
	}
	if r.RefreshToken != "" {
		extra["refresh_token"] = r.RefreshToken
	}
	return t.WithExtra(extra)
}

// mintLocked issues, at now, a new access token for the grant of
// refreshToken, or for a new grant with a new refresh token when
// refreshToken is empty. s.mu must be held.
func (s *Server) mintLocked(refreshToken string, now time.Time) *tokenResponse {
	if refreshToken == "" {
		s.ngrants++
		g := &grant{name: "grant" + strconv.Itoa(s.ngrants)}
		g.issued++
		refreshToken = s.newRefreshLocked(g)
	}
	g := s.grants[refreshToken]
	at := s.nameLocked(AccessToken, g)
	s.access[at] = &accessGrant{expiry: now.Add(time.Duration(s.expiresIn) * time.Second), user: g}
	return &tokenResponse{
		AccessToken:  at,
		TokenType:    "Bearer",
		ExpiresIn:    s.expiresIn,
		Scope:        scope,
		RefreshToken: refreshToken,
	}
}

// newRefreshLocked issues a new refresh token for g, which becomes its
// live one, and counts an issue of g. s.mu must be held.
func (s *Server) newRefreshLocked(g *grant) string {
	rt := s.nameLocked(RefreshToken, g)
	s.seq++
	s.refresh[rt] = s.seq
	s.grants[rt] = g
	g.live = rt
	return rt
}

// nameLocked names a new token of kind for g's current issue. s.mu must
// be held.
func (s *Server) nameLocked(kind TokenKind, g *grant) string {
	if s.opts.TokenName == nil {
		return randomToken()
	}
	return s.opts.TokenName(kind, g.name, g.issued)
}

// refreshLocked carries out a refresh_token grant for rt at now. s.mu
// must be held.
func (s *Server) refreshLocked(rt string, now time.Time) (*tokenResponse, *tokenError) {
	if _, ok := s.refresh[rt]; !ok {
		s.reusedLocked(rt)
		return nil, invalidGrant("The refresh token is invalid or revoked.")
	}
	g := s.grants[rt]
	g.issued++
	if s.rotation {
		delete(s.refresh, rt)
		return s.mintLocked(s.newRefreshLocked(g), now), nil
	}
	resp := s.mintLocked(rt, now)
	if s.opts.OmitRefreshToken {
		resp.RefreshToken = ""
	}
	return resp, nil
}

// reusedLocked handles rt, a refresh token presented that does not work:
// with reuse detection, if rotation replaced it, the grant is revoked.
// s.mu must be held.
func (s *Server) reusedLocked(rt string) {
	g := s.grants[rt]
	if !s.opts.ReuseDetection || g == nil || g.live == "" || g.live == rt {
		return // unknown, revoked already, or not replaced
	}
	if _, live := s.refresh[g.live]; !live {
		return
	}
	s.reuses++
	delete(s.refresh, g.live)
	g.live = ""
}

// randomToken returns 160 random bits in hex, the shape of PandaDoc's
// tokens.
func randomToken() string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic("fakepandadoc: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// cloneValues returns a deep copy of v.
func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
