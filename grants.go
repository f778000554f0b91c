package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
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
// A key whose Store holds no token costs nothing to keep: the grant is
// dropped from memory as soon as its Store answers that it has no token
// (or fails to answer), and the request fails with an error that names
// the key and wraps ErrNoToken (or the Store's error). So keys taken
// from request input (a workspace ID in a URL) neither grow memory nor,
// with MaxGrants, push out the grants that have a token. Forget drops a
// grant from memory on purpose, for example when its customer
// disconnects.
//
// Set the fields before first use and do not change them afterwards. The
// methods are safe for concurrent use by multiple goroutines. A Grants
// printed (String, %v, log/slog, encoding/json) shows a summary without
// tokens, secrets or keys.
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
	// next use); a grant in use is never evicted: one with a request
	// under way through Transport, one that is refreshing, one whose
	// token is not saved, and one whose TokenSource Source has handed
	// out (until Forget). 0 sets no bound: a grant costs a few hundred
	// bytes, so even 100,000 fit in about 30 MB.
	MaxGrants int

	// MaxRefreshes caps the token-endpoint requests made at once across
	// all grants. 0 means DefaultMaxRefreshes; a negative value sets no
	// cap.
	MaxRefreshes int

	// OnRevoked, if set, is called once when a grant's refresh token is
	// refused with invalid_grant (usually: the customer disconnected the
	// app), with an error wrapping the *oauth2.RetrieveError, so that the
	// app can ask that customer to connect again. It is called again only
	// after the grant has had a new token since (one the token endpoint
	// issued, or one with another refresh token found in the Store), even
	// if the grant was evicted and loaded again meanwhile, or after
	// Forget(key). Other grants are not affected. It runs on a goroutine
	// of its own, after the callers that waited for the failed refresh
	// have their error, so it may take its time and may use the grant
	// (Source(key)); Grants.Wait waits for it, so it must not call
	// Grants.Wait itself.
	OnRevoked func(key string, err error)

	mu      sync.RWMutex      // guards m, ring, hand, revoked and leaving
	m       map[string]*grant // the grants in memory
	ring    []*grant          // the grants in memory, for eviction; only with MaxGrants
	hand    int               // where the next eviction looks first
	revoked map[string]uint64 // grants reported to OnRevoked that have had no new token since: key -> refreshHash of the refused token
	leaving []*grant          // grants forgotten while busy, for Wait

	callbacks callbacks // OnRevoked calls under way

	init sync.Once
	sem  chan struct{} // MaxRefreshes slots; nil for no cap
	obs  *Observer     // each grant's Observer: Observer, and revocations
	seed maphash.Seed  // for refreshHash

	clk *clockRef // nil: the real clock
}

// grant is one grant of a Grants: its TokenSource, whose Store is the
// grant itself (grantStore), so that it costs no allocation of its own.
type grant struct {
	TokenSource
	key       string
	g         *Grants
	used      atomic.Bool  // used since the last eviction sweep; only with MaxGrants
	pinned    atomic.Bool  // handed out by Source: never evicted
	forgotten atomic.Bool  // dropped by Forget: never touches the Store again
	inflight  atomic.Int32 // requests under way through Transport; only with MaxGrants
}

// callbacks counts the OnRevoked calls under way. Unlike a
// sync.WaitGroup, it may be waited for while calls start: Wait runs
// beside traffic, whose refreshes may report a revocation at any time.
type callbacks struct {
	mu   sync.Mutex    // guards n and idle
	n    int           // calls under way
	idle chan struct{} // closed when n drops to 0; nil while n is 0
}

// start counts a call in.
func (c *callbacks) start() {
	c.mu.Lock()
	if c.n == 0 {
		c.idle = make(chan struct{})
	}
	c.n++
	c.mu.Unlock()
}

// done counts a call out.
func (c *callbacks) done() {
	c.mu.Lock()
	c.n--
	if c.n == 0 {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
}

// wait waits until no call is under way.
func (c *callbacks) wait() {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	if idle != nil {
		<-idle
	}
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
//
// A source handed out is counted in use: MaxGrants never evicts its
// grant, so that no second TokenSource is built for the grant while a
// caller still holds the first (two would refresh one grant, and with a
// rotating token endpoint one would present a spent refresh token). It
// stays in memory until Forget(key). For many grants, prefer requests
// through Transport, which hold a grant only while they run.
//
// A key whose Store holds no token is the exception: its grant is
// dropped once the Store says so (see Grants). A source of such a grant,
// kept and used after a token was stored, takes its place again if no
// other source serves the key by then, and fails otherwise (call Source
// again).
func (g *Grants) Source(key string) *TokenSource {
	return &g.lookup(key, true).TokenSource
}

// Forget drops what g holds in memory for the grant of key: its
// TokenSource and the token it caches, a failure it remembers, and
// whether its revocation was reported to OnRevoked. The next request
// for key builds the grant afresh from the Store. Call it when a
// customer disconnects, after deleting their token from the Store, or
// when they connect again, after saving their new token. Forget does not
// touch the Store.
//
// A TokenSource of the grant handed out before (by Source) is done: it
// keeps serving the access token it holds, but it never again reads or
// writes the Store or asks the token endpoint (a refresh fails, saying
// so), so it cannot overwrite what the Store holds next. A refresh under
// way when Forget is called may end, but its token is not saved. Wait
// still waits for such a refresh.
func (g *Grants) Forget(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.revoked, key)
	gr := g.m[key]
	if gr == nil {
		return
	}
	gr.forgotten.Store(true)
	g.removeLocked(gr)
	g.pruneLeaving()
	if gr.busy() {
		g.leaving = append(g.leaving, gr) // for Wait
	}
}

// pruneLeaving lets go of the forgotten grants whose work has ended.
// g.mu must be held.
func (g *Grants) pruneLeaving() {
	kept := g.leaving[:0]
	for _, l := range g.leaving {
		if l.busy() {
			kept = append(kept, l)
		}
	}
	clear(g.leaving[len(kept):])
	g.leaving = kept
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
// grant added or evicted meanwhile may or may not be seen. s is for f to
// read (Expiry, String) while it runs: unlike Source, Range does not
// count it in use, so do not keep it; call Source for a source to keep.
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

// Wait waits for the background work of every grant in memory, and of
// grants forgotten while busy, as TokenSource.Wait does for one, the
// grants side by side (so a failing Store holds it up for 30 seconds at
// most, not 30 seconds a grant), and for the OnRevoked calls under way,
// those the waited-for work started included. It may be called while
// requests go on; work they start meanwhile may or may not be waited
// for.
func (g *Grants) Wait() {
	g.mu.RLock()
	grants := make([]*grant, 0, len(g.m)+len(g.leaving))
	for _, gr := range g.m {
		grants = append(grants, gr)
	}
	grants = append(grants, g.leaving...)
	g.mu.RUnlock()
	var wg sync.WaitGroup
	for _, gr := range grants {
		if gr.busy() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				gr.Wait()
			}()
		}
	}
	wg.Wait()
	g.callbacks.wait()
	g.mu.Lock()
	g.pruneLeaving()
	g.mu.Unlock()
}

// lookup returns the grant of key, creating it. With pin, the grant is
// counted in use for good (Source) before the lock is let go, so that no
// eviction can take it in between.
func (g *Grants) lookup(key string, pin bool) *grant {
	g.mu.RLock()
	gr := g.m[key]
	if gr != nil {
		if g.MaxGrants > 0 && !gr.used.Load() {
			gr.used.Store(true)
		}
		if pin && !gr.pinned.Load() {
			gr.pinned.Store(true)
		}
	}
	g.mu.RUnlock()
	if gr == nil {
		return g.add(key, false, pin)
	}
	return gr
}

// use is lookup for a request. With MaxGrants, the request counts
// itself in (inflight) under the read lock, so that no eviction can take
// the grant while it is in use, until the request calls
// gr.inflight.Add(-1).
func (g *Grants) use(key string) *grant {
	if g.MaxGrants <= 0 {
		return g.lookup(key, false)
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
		gr = g.add(key, true, false)
	}
	return gr
}

// add creates the grant of key. With use, the grant is counted in use
// (inflight) before the lock is let go, and with pin, for good.
func (g *Grants) add(key string, use, pin bool) *grant {
	g.init.Do(g.setup)
	g.mu.Lock()
	defer g.mu.Unlock()
	if gr := g.m[key]; gr != nil {
		if use {
			gr.inflight.Add(1)
		}
		if pin {
			gr.pinned.Store(true)
		}
		return gr
	}
	gr := &grant{key: key, g: g}
	gr.TokenSource = TokenSource{Config: g.Config, EarlyRefresh: g.EarlyRefresh, Logger: g.Logger, Observer: g.obs, clk: g.clk}
	if _, ok := g.Store.(KeyedLocker); ok {
		gr.TokenSource.Store = (*lockingGrantStore)(gr)
	} else {
		gr.TokenSource.Store = (*grantStore)(gr)
	}
	if use {
		gr.inflight.Add(1)
	}
	gr.pinned.Store(pin)
	g.insertLocked(gr)
	return gr
}

// insertLocked makes gr the grant of its key in memory. It evicts
// nothing: a grant makes room for itself once its Store has a token for
// it (admit), so that keys without a token never push out grants that
// have one. g.mu must be held, and the key must have no grant.
func (g *Grants) insertLocked(gr *grant) {
	if g.m == nil {
		g.m = make(map[string]*grant)
	}
	if g.MaxGrants > 0 {
		gr.used.Store(true)
		g.ring = append(g.ring, gr)
	}
	g.m[gr.key] = gr
}

// admit makes room for gr, whose Store has just given it its first
// token, evicting another grant if MaxGrants says so. gr itself is
// loading, so it is not the one evicted.
func (g *Grants) admit(gr *grant) {
	if g.MaxGrants <= 0 {
		return
	}
	g.mu.Lock()
	if g.m[gr.key] == gr && len(g.m) > g.MaxGrants {
		g.evictOne()
	}
	g.mu.Unlock()
}

// removeLocked takes gr out of memory. g.mu must be held, and gr must be
// the grant of its key.
func (g *Grants) removeLocked(gr *grant) {
	delete(g.m, gr.key)
	for i, r := range g.ring {
		if r == gr {
			g.dropRing(i)
			return
		}
	}
}

// dropRing removes the grant at i from the ring. g.mu must be held.
func (g *Grants) dropRing(i int) {
	last := len(g.ring) - 1
	g.ring[i] = g.ring[last]
	g.ring[last] = nil
	g.ring = g.ring[:last]
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
		g.dropRing(g.hand)
		delete(g.m, gr.key)
		return
	}
}

// idle reports whether gr may be evicted: not handed out by Source, no
// request or flight under way, nothing unsaved.
func (gr *grant) idle() bool {
	return !gr.pinned.Load() && gr.inflight.Load() == 0 && !gr.busy()
}

// attach makes gr the grant of its key in memory again if it was dropped
// while it had no token and no other grant took the key since, and
// reports whether gr is its key's grant: only that one may use the Store
// and the token endpoint, so that one grant never has two sources
// refreshing it.
func (g *Grants) attach(gr *grant) error {
	if gr.forgotten.Load() {
		return fmt.Errorf("pandadocauth: grant %q was forgotten (Grants.Forget): this TokenSource no longer uses the Store or the token endpoint; call Grants.Source for the grant's current one", gr.key)
	}
	g.mu.RLock()
	cur := g.m[gr.key]
	g.mu.RUnlock()
	if cur == gr {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch cur := g.m[gr.key]; {
	case gr.forgotten.Load():
		return fmt.Errorf("pandadocauth: grant %q was forgotten (Grants.Forget): this TokenSource no longer uses the Store or the token endpoint; call Grants.Source for the grant's current one", gr.key)
	case cur == gr:
		return nil
	case cur != nil:
		return fmt.Errorf("pandadocauth: grant %q is served by another TokenSource now (this one was dropped from Grants while the grant had no token, or evicted): call Grants.Source for the current one", gr.key)
	}
	g.insertLocked(gr)
	return nil
}

// dropTokenless takes gr out of memory, if it still is its key's grant
// and has never had a token: its Store has none for it, or could not be
// read. It keeps no state for keys that name no grant.
func (g *Grants) dropTokenless(gr *grant) {
	g.mu.Lock()
	if g.m[gr.key] == gr && gr.cache.Load() == nil {
		g.removeLocked(gr)
	}
	g.mu.Unlock()
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
	g.seed = maphash.MakeSeed()
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
// the grant has a new token: one the endpoint issued, or one with
// another refresh token than the refused one, loaded or adopted from the
// Store. A token loaded again is not enough: a revoked grant that is
// evicted and rebuilt loads the same stored token, whose access token
// may not have expired. The revoked grants are kept by key, so that an
// evicted and rebuilt grant is not reported again.
func (g *Grants) refreshDone(info RefreshDoneInfo) {
	var re *oauth2.RetrieveError
	switch {
	case info.Outcome == OutcomeRefreshed:
		g.unrevoke(info.Grant, nil)
	case info.Outcome == OutcomeLoaded || info.Outcome == OutcomeAdopted:
		g.unrevoke(info.Grant, func(refused uint64) bool {
			h, ok := g.servedRefresh(info.Grant)
			return ok && h != refused
		})
	case info.Outcome == OutcomePermanent && errors.As(info.Err, &re) && re.ErrorCode == "invalid_grant":
		h, ok := g.servedRefresh(info.Grant)
		if !ok {
			return // forgotten meanwhile
		}
		g.mu.Lock()
		_, was := g.revoked[info.Grant]
		if !was {
			if g.revoked == nil {
				g.revoked = make(map[string]uint64)
			}
			g.revoked[info.Grant] = h
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
			g.callbacks.start()
			go func() {
				defer g.callbacks.done()
				g.OnRevoked(info.Grant, info.Err)
			}()
		}
	}
}

// unrevoke forgets that key's revocation was reported, if it was and
// new (nil meaning always) says that the grant's token is new.
func (g *Grants) unrevoke(key string, new func(refused uint64) bool) {
	g.mu.RLock()
	refused, was := g.revoked[key]
	g.mu.RUnlock()
	if !was || new != nil && !new(refused) {
		return
	}
	g.mu.Lock()
	if g.revoked[key] == refused {
		delete(g.revoked, key)
	}
	g.mu.Unlock()
}

// servedRefresh returns the refreshHash of the refresh token that the
// grant of key holds, and false when key has no grant in memory.
func (g *Grants) servedRefresh(key string) (uint64, bool) {
	g.mu.RLock()
	gr := g.m[key]
	g.mu.RUnlock()
	if gr == nil {
		return 0, false
	}
	rt := ""
	if ct := gr.cache.Load(); ct != nil {
		rt = ct.tok.RefreshToken
	}
	return g.refreshHash(rt), true
}

// refreshHash identifies a refresh token without keeping it: a revoked
// grant's refused token is remembered by this hash, 8 bytes a grant.
func (g *Grants) refreshHash(rt string) uint64 {
	return maphash.String(g.seed, rt)
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

// noGrantTokenError is the error of a grant whose key has no token in
// Grants.Store. It matches ErrNoToken, whose own words are for a
// TokenSource of its own.
type noGrantTokenError struct{ key string }

func (e *noGrantTokenError) Error() string {
	return fmt.Sprintf("pandadocauth: no token for grant %q in Grants.Store: save the customer's token under this key first (KeyedStore.Save, with the token Config.Exchange returns when they connect), or check the key", e.key)
}

func (e *noGrantTokenError) Is(target error) bool { return target == ErrNoToken }

// grantStore is a grant seen as the Store of its TokenSource. Only the
// grant in memory for its key uses the KeyedStore (attach). A forgotten
// one reads nothing, saves nothing and locks nothing, without failing,
// so that what it has under way (a Save retry, say) ends at once; what
// fails is its next token-endpoint request (acquire).
type grantStore grant

func (s *grantStore) Load(ctx context.Context) (*oauth2.Token, error) {
	gr := (*grant)(s)
	if s.g.Store == nil {
		return nil, errors.New("pandadocauth: Grants.Store is nil")
	}
	if gr.forgotten.Load() && gr.cache.Load() != nil {
		return nil, nil // nothing read: the token in memory goes on
	}
	if err := s.g.attach(gr); err != nil {
		return nil, err
	}
	t, err := s.g.Store.Load(ctx, s.key)
	if gr.cache.Load() != nil {
		return t, err
	}
	// The grant's first token, or none: a grant that gets none is not
	// kept, and the next request for its key asks the Store again.
	switch {
	case err != nil:
		s.g.dropTokenless(gr)
		return nil, err
	case t == nil || t.AccessToken == "" && t.RefreshToken == "":
		s.g.dropTokenless(gr)
		return nil, &noGrantTokenError{key: s.key}
	}
	s.g.admit(gr)
	return t, nil
}

func (s *grantStore) Save(ctx context.Context, t *oauth2.Token) error {
	gr := (*grant)(s)
	if s.g.Store == nil {
		return errors.New("pandadocauth: Grants.Store is nil")
	}
	if gr.forgotten.Load() {
		return nil // the app dropped the grant: its token is not wanted
	}
	if err := s.g.attach(gr); err != nil {
		return err
	}
	return s.g.Store.Save(ctx, s.key, t)
}

func (s *grantStore) grantKey() string { return s.key }

// acquire is called before each token-endpoint request of the grant: it
// checks that the grant may refresh and that the application has its
// credentials, then takes a refresh slot.
func (s *grantStore) acquire(ctx context.Context) (func(), error) {
	if err := s.g.attach((*grant)(s)); err != nil {
		return nil, err
	}
	if c := s.g.Config; c != nil {
		if err := c.checkCredentials(); err != nil {
			return nil, err
		}
	}
	return s.g.acquire(ctx)
}

// lockingGrantStore is a grantStore whose KeyedStore is a KeyedLocker.
type lockingGrantStore grant

func (s *lockingGrantStore) Load(ctx context.Context) (*oauth2.Token, error) {
	return (*grantStore)(s).Load(ctx)
}

func (s *lockingGrantStore) Save(ctx context.Context, t *oauth2.Token) error {
	return (*grantStore)(s).Save(ctx, t)
}

func (s *lockingGrantStore) Lock(ctx context.Context) (func(), error) {
	if s.forgotten.Load() {
		return func() {}, nil // it writes nothing: nothing to serialise
	}
	if err := s.g.attach((*grant)(s)); err != nil {
		return nil, err
	}
	return s.g.Store.(KeyedLocker).Lock(ctx, s.key)
}

func (s *lockingGrantStore) grantKey() string { return s.key }

func (s *lockingGrantStore) acquire(ctx context.Context) (func(), error) {
	return (*grantStore)(s).acquire(ctx)
}

// String summarises g without any token, secret or grant key: the
// application's client ID, how many grants are in memory, how many are
// reported revoked, and the bounds.
func (g *Grants) String() string {
	g.mu.RLock()
	n, revoked := len(g.m), len(g.revoked)
	g.mu.RUnlock()
	clientID := ""
	if g.Config != nil {
		clientID = g.Config.ClientID
	}
	refreshes := fmt.Sprint(g.MaxRefreshes)
	switch {
	case g.MaxRefreshes == 0:
		refreshes = fmt.Sprint(DefaultMaxRefreshes)
	case g.MaxRefreshes < 0:
		refreshes = "no cap"
	}
	grants := "no bound"
	if g.MaxGrants > 0 {
		grants = fmt.Sprint(g.MaxGrants)
	}
	return fmt.Sprintf("pandadocauth.Grants{ClientID: %q, grants in memory: %d, revoked: %d, MaxGrants: %s, MaxRefreshes: %s}",
		clientID, n, revoked, grants, refreshes)
}

// GoString is like String, for the %#v verb.
func (g *Grants) GoString() string { return g.String() }

// LogValue is like String, for log/slog.
func (g *Grants) LogValue() slog.Value { return slog.StringValue(g.String()) }

// MarshalJSON encodes String, so that no token, secret or Store internals
// are encoded.
func (g *Grants) MarshalJSON() ([]byte, error) { return json.Marshal(g.String()) }

// grantsTransport is the RoundTripper of Grants.Transport.
type grantsTransport struct {
	g    *Grants
	base http.RoundTripper
}

// RoundTrip authorizes req with the grant its context names and sends
// it. It does not modify req and always closes its body.
func (t *grantsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body := closeUnsent(req)
	defer body.close()
	key, ok := GrantFromContext(req.Context())
	if !ok {
		return nil, fmt.Errorf("pandadocauth: %w", ErrNoGrant)
	}
	if authorize, err := preflight(req); !authorize {
		return body.send(t.base, req, err)
	}
	gr := t.g.use(key)
	if t.g.MaxGrants > 0 {
		defer gr.inflight.Add(-1)
	}
	ct, err := gr.current(req.Context())
	if err != nil {
		var none *noGrantTokenError
		if errors.As(err, &none) {
			return nil, none // the key names no grant: say so, and only that
		}
		return nil, err
	}
	body.sent = true
	return withSource(t.base, req, &gr.TokenSource, ct)
}
