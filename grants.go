package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// KeyedStore persists the tokens of many grants, one per key (for
// example a PandaDoc workspace or customer ID). Load returns nil, nil
// when the key has no token. Implementations must be safe for concurrent
// use.
type KeyedStore interface {
	Load(ctx context.Context, key string) (*oauth2.Token, error)
	Save(ctx context.Context, key string, t *oauth2.Token) error
}

// A KeyedStore that also implements KeyedLocker serialises each grant's
// refreshes across processes, as Locker does for one grant.
type KeyedLocker interface {
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// DefaultMaxRefreshes is how many token-endpoint requests a Grants makes
// at once when Grants.MaxRefreshes is 0.
const DefaultMaxRefreshes = 16

// ErrNoGrant means a request sent through Grants.Transport carries no
// grant key in its context (see WithGrant). It is not sent.
var ErrNoGrant = errors.New("no grant in the request's context: use WithGrant")

// Grants serves many grants of one application: an app that integrates
// with PandaDoc usually holds one grant per customer, each of whom
// connected their own workspace. Each grant gets its own TokenSource,
// created lazily from Store on first use, with everything a TokenSource
// guarantees (one refresh per grant however many concurrent requests, a
// failure shared and remembered, early refresh, 401 recovery, Save before
// use); refreshes of different grants never wait on each other, and at
// most MaxRefreshes token-endpoint requests run at once, so that a
// thundering herd (a deploy, a clock jump) stays under PandaDoc's rate
// limit.
//
// A request picks its grant from its context: send it with
// WithGrant(ctx, key) through the RoundTripper Transport returns.
//
// Set the fields before first use and do not change them afterwards. The
// methods are safe for concurrent use by multiple goroutines.
type Grants struct {
	// Config is the application the grants belong to. Required.
	Config *Config

	// Store persists every grant's token. Required: a grant's first
	// token is loaded from it. If it also implements KeyedLocker,
	// refreshes of each grant are serialised across processes.
	Store KeyedStore

	// EarlyRefresh is each grant's TokenSource.EarlyRefresh.
	EarlyRefresh time.Duration

	// Logger, if set, receives what each grant's TokenSource logs, with
	// a "grant" attribute, and a warning, once, when a grant is revoked.
	Logger *slog.Logger

	// Observer, if set, receives every grant's events; their Grant field
	// is the grant's key.
	Observer *Observer

	// MaxGrants bounds how many grants are kept in memory. Past it, a
	// grant not used recently is evicted (and rebuilt from Store on its
	// next use); a grant whose token is not saved, or that is refreshing,
	// is never evicted. 0 sets no bound: a grant costs a few hundred bytes,
	// so even 100,000 fit in about 30 MB.
	MaxGrants int

	// MaxRefreshes caps the token-endpoint requests made at once across
	// all grants. 0 means DefaultMaxRefreshes; a negative value sets no
	// cap.
	MaxRefreshes int

	// OnRevoked, if set, is called once when a grant's refresh token is
	// refused with invalid_grant (usually: the customer disconnected the
	// app), with an error wrapping the *oauth2.RetrieveError, so that the
	// app can ask that customer to connect again. It is called again only
	// after the grant has had a valid token since, even if the grant was
	// evicted meanwhile. Other grants are not affected. It runs on a
	// goroutine of its own, after the callers that waited for the failed
	// refresh have their error, so it may take its time and may use the
	// grant (Source(key)); Grants.Wait waits for it, so it must not call
	// Grants.Wait itself.
	OnRevoked func(key string, err error)

	mu      sync.RWMutex        // guards m, ring, hand and revoked
	m       map[string]*grant   // the grants in memory
	ring    []*grant            // the grants in memory, for eviction; only with MaxGrants
	hand    int                 // where the next eviction looks first
	revoked map[string]struct{} // grants reported to OnRevoked that have not worked since

	callbacks sync.WaitGroup // OnRevoked calls under way

	init sync.Once
	sem  chan struct{} // MaxRefreshes slots; nil for no cap
	obs  *Observer     // each grant's Observer: Observer, and revocations

	clk *clockRef // nil: the real clock
}

// grant is one grant of a Grants: its TokenSource, whose Store is the
// grant itself (grantStore), so that it costs no allocation of its own.
type grant struct {
	TokenSource
	key      string
	g        *Grants
	used     atomic.Bool  // used since the last eviction sweep; only with MaxGrants
	inflight atomic.Int32 // requests under way through Transport; only with MaxGrants
}

type grantCtxKey struct{}

// WithGrant returns a copy of ctx that carries the grant key, for a
// request sent through Grants.Transport.
func WithGrant(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, grantCtxKey{}, key)
}

// GrantFromContext returns the grant key WithGrant put in ctx.
func GrantFromContext(ctx context.Context) (string, bool) {
	key, ok := ctx.Value(grantCtxKey{}).(string)
	return key, ok && key != ""
}

// Source returns the grant's token source: the same one for the same key
// while the grant is in memory. Use it for calls that are not HTTP
// requests through Transport, or to Wait for it.
func (g *Grants) Source(key string) *TokenSource {
	return &g.lookup(key).TokenSource
}

// Transport returns an http.RoundTripper that authenticates each request
// with the grant its context names (WithGrant), following Transport's
// rules. A request without a grant fails with ErrNoGrant before anything
// is sent. base nil means http.DefaultTransport.
func (g *Grants) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &grantsTransport{g: g, base: base}
}

// Range calls f for each grant in memory, until f returns false. A
// grant added or evicted meanwhile may or may not be seen.
func (g *Grants) Range(f func(key string, s *TokenSource) bool) {
	g.mu.RLock()
	grants := make([]*grant, 0, len(g.m))
	for _, gr := range g.m {
		grants = append(grants, gr)
	}
	g.mu.RUnlock()
	for _, gr := range grants {
		if !f(gr.key, &gr.TokenSource) {
			return
		}
	}
}

// Wait waits for the background work of every grant in memory, as
// TokenSource.Wait does for one, the grants side by side (so a failing
// Store holds it up for 30 seconds at most, not 30 seconds a grant), and
// for the OnRevoked calls under way.
func (g *Grants) Wait() {
	var wg sync.WaitGroup
	g.Range(func(_ string, s *TokenSource) bool {
		if s.busy() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Wait()
			}()
		}
		return true
	})
	wg.Wait()
	g.callbacks.Wait()
}

// lookup returns the grant of key, creating it.
func (g *Grants) lookup(key string) *grant {
	g.mu.RLock()
	gr := g.m[key]
	if gr != nil && g.MaxGrants > 0 && !gr.used.Load() {
		gr.used.Store(true)
	}
	g.mu.RUnlock()
	if gr == nil {
		return g.add(key, false)
	}
	return gr
}

// use is lookup for a request. With MaxGrants, the request counts
// itself in (inflight) under the read lock, so that no eviction can take
// the grant while it is in use, until the request calls
// gr.inflight.Add(-1).
func (g *Grants) use(key string) *grant {
	if g.MaxGrants <= 0 {
		return g.lookup(key)
	}
	g.mu.RLock()
	gr := g.m[key]
	if gr != nil {
		if !gr.used.Load() {
			gr.used.Store(true)
		}
		gr.inflight.Add(1)
	}
	g.mu.RUnlock()
	if gr == nil {
		gr = g.add(key, true)
	}
	return gr
}

// add creates the grant of key, evicting another if MaxGrants says so.
// With use, the grant is counted in use before the lock is let go.
func (g *Grants) add(key string, use bool) *grant {
	g.init.Do(g.setup)
	g.mu.Lock()
	defer g.mu.Unlock()
	if gr := g.m[key]; gr != nil {
		if use {
			gr.inflight.Add(1)
		}
		return gr
	}
	if g.m == nil {
		g.m = make(map[string]*grant)
	}
	gr := &grant{key: key, g: g}
	gr.TokenSource = TokenSource{Config: g.Config, EarlyRefresh: g.EarlyRefresh, Logger: g.Logger, Observer: g.obs, clk: g.clk}
	if _, ok := g.Store.(KeyedLocker); ok {
		gr.TokenSource.Store = (*lockingGrantStore)(gr)
	} else {
		gr.TokenSource.Store = (*grantStore)(gr)
	}
	if g.MaxGrants > 0 {
		if len(g.m) >= g.MaxGrants {
			g.evictOne()
		}
		gr.used.Store(true)
		g.ring = append(g.ring, gr)
	}
	if use {
		gr.inflight.Add(1)
	}
	g.m[key] = gr
	return gr
}

// evictOne evicts one grant not used since the hand last passed it and
// with nothing to lose: no request or flight under way, its token saved
// (the clock algorithm: an approximation of least-recently-used whose
// bookkeeping costs a request one flag, not a list update under a write
// lock). If every grant is busy, none is evicted. g.mu must be held.
func (g *Grants) evictOne() {
	for range 2 * len(g.ring) {
		if g.hand >= len(g.ring) {
			g.hand = 0
		}
		gr := g.ring[g.hand]
		if gr.used.Swap(false) || !gr.idle() {
			g.hand++
			continue
		}
		last := len(g.ring) - 1
		g.ring[g.hand] = g.ring[last]
		g.ring[last] = nil
		g.ring = g.ring[:last]
		delete(g.m, gr.key)
		return
	}
}

// idle reports whether gr may be evicted: no request or flight under
// way, nothing unsaved.
func (gr *grant) idle() bool {
	return gr.inflight.Load() == 0 && !gr.busy()
}

// setup makes the refresh slots and the grants' Observer.
func (g *Grants) setup() {
	n := g.MaxRefreshes
	if n == 0 {
		n = DefaultMaxRefreshes
	}
	if n > 0 {
		g.sem = make(chan struct{}, n)
	}
	var o Observer
	if g.Observer != nil {
		o = *g.Observer
	}
	user := o.RefreshDone
	o.RefreshDone = func(ctx context.Context, info RefreshDoneInfo) {
		if user != nil {
			user(ctx, info)
		}
		g.refreshDone(info)
	}
	g.obs = &o
}

// refreshDone reports a revoked grant once, and forgets the report when
// the grant has a token again. The revoked grants are kept by key, so
// that an evicted and rebuilt grant is not reported again.
func (g *Grants) refreshDone(info RefreshDoneInfo) {
	var re *oauth2.RetrieveError
	switch {
	case info.Outcome >= OutcomeLoaded && info.Outcome <= OutcomeRefreshed:
		g.mu.RLock()
		_, was := g.revoked[info.Grant]
		g.mu.RUnlock()
		if was {
			g.mu.Lock()
			delete(g.revoked, info.Grant)
			g.mu.Unlock()
		}
	case info.Outcome == OutcomePermanent && errors.As(info.Err, &re) && re.ErrorCode == "invalid_grant":
		g.mu.Lock()
		_, was := g.revoked[info.Grant]
		if !was {
			if g.revoked == nil {
				g.revoked = make(map[string]struct{})
			}
			g.revoked[info.Grant] = struct{}{}
		}
		g.mu.Unlock()
		if was {
			return
		}
		if g.Logger != nil {
			g.Logger.Warn("pandadocauth: grant revoked (invalid_grant): the customer must connect again", slog.String("grant", info.Grant), slog.Any("error", info.Err))
		}
		if g.OnRevoked != nil {
			// Not on the flight: its callers are released first, and the
			// callback may wait for the grant.
			g.callbacks.Add(1)
			go func() {
				defer g.callbacks.Done()
				g.OnRevoked(info.Grant, info.Err)
			}()
		}
	}
}

// acquire takes one of the refresh slots, waiting until one frees or ctx
// ends, and returns the function that gives it back.
func (g *Grants) acquire(ctx context.Context) (func(), error) {
	if g.sem == nil {
		return func() {}, nil
	}
	select {
	case g.sem <- struct{}{}:
		return func() { <-g.sem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("pandadocauth: waiting for a refresh slot (Grants.MaxRefreshes): %w", ctx.Err())
	}
}

// grantStore is a grant seen as the Store of its TokenSource.
type grantStore grant

func (s *grantStore) Load(ctx context.Context) (*oauth2.Token, error) {
	if s.g.Store == nil {
		return nil, errors.New("pandadocauth: Grants.Store is nil")
	}
	return s.g.Store.Load(ctx, s.key)
}

func (s *grantStore) Save(ctx context.Context, t *oauth2.Token) error {
	if s.g.Store == nil {
		return errors.New("pandadocauth: Grants.Store is nil")
	}
	return s.g.Store.Save(ctx, s.key, t)
}

func (s *grantStore) grantKey() string { return s.key }

func (s *grantStore) acquire(ctx context.Context) (func(), error) { return s.g.acquire(ctx) }

// lockingGrantStore is a grantStore whose KeyedStore is a KeyedLocker.
type lockingGrantStore grant

func (s *lockingGrantStore) Load(ctx context.Context) (*oauth2.Token, error) {
	return (*grantStore)(s).Load(ctx)
}

func (s *lockingGrantStore) Save(ctx context.Context, t *oauth2.Token) error {
	return (*grantStore)(s).Save(ctx, t)
}

func (s *lockingGrantStore) Lock(ctx context.Context) (func(), error) {
	return s.g.Store.(KeyedLocker).Lock(ctx, s.key)
}

func (s *lockingGrantStore) grantKey() string { return s.key }

func (s *lockingGrantStore) acquire(ctx context.Context) (func(), error) { return s.g.acquire(ctx) }

// grantsTransport is the RoundTripper of Grants.Transport.
type grantsTransport struct {
	g    *Grants
	base http.RoundTripper
}

// RoundTrip authorizes req with the grant its context names and sends
// it. It does not modify req and always closes its body.
func (t *grantsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	reqBodyClosed := false
	if req.Body != nil {
		defer func() {
			if !reqBodyClosed {
				req.Body.Close()
			}
		}()
	}
	if req.URL == nil {
		return nil, errors.New("pandadocauth: request has no URL")
	}
	key, ok := GrantFromContext(req.Context())
	if !ok {
		return nil, fmt.Errorf("pandadocauth: %w", ErrNoGrant)
	}
	if crossOrigin(req) {
		reqBodyClosed = true
		return send(t.base, req)
	}
	if err := checkSecure(req.URL); err != nil {
		return nil, fmt.Errorf("pandadocauth: %w", err)
	}
	gr := t.g.use(key)
	if t.g.MaxGrants > 0 {
		defer gr.inflight.Add(-1)
	}
	ct, err := gr.current(req.Context())
	if err != nil {
		return nil, err
	}
	reqBodyClosed = true
	return withSource(t.base, req, &gr.TokenSource, ct)
}
