package pandadocauth

// The world of the fleet simulation (sim_test.go): replicas and their
// incarnations, the fake clocks, the shared fault-injecting Store and
// Locker, and the bookkeeping that tells the driver when every goroutine
// of the simulation is parked.
//
// Quiescence. The driver acts only when nothing else runs. It counts the
// goroutines that may run (active): a caller it starts, a flight the
// engine starts (Observer.RefreshStart), a goroutine it wakes (a parked
// Store or endpoint call it answers, a fake timer it fires, a caller
// whose context it ends, the callers of a flight that ended). A
// goroutine counts itself out when it parks at a point the simulation
// controls: a Store, Locker or token-endpoint call (simPark), a fake
// timer, a flight it waits for (RefreshStart of a flight it waits for,
// RefreshJoin), or when it returns (a caller) or ends (RefreshDone of a
// flight). When active is 0, every goroutine waits for the driver, and
// what happens next is what the driver chooses: goroutine scheduling
// cannot change it.
//
// Two kinds of wake are ordered further. Callers started together would
// race to a shared outcome (which of them meets a 401 first), so they
// start one at a time. The Save-retry timer is waited for by a goroutine
// of the engine's own, not by the one that started it (detached): it
// fires alone, once the rest has settled, and its goroutine is counted
// until it starts its flight, or not at all when a flight of its source
// is under way (it then does nothing).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// simEpoch is the true wall-clock time at the start of every schedule.
var simEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// simMonoBase is every clock's Mono reading at the start.
const simMonoBase = time.Hour

// simLeaseTTL is how long a lock lease lasts (lease-mode locks), in fake
// time.
const simLeaseTTL = 90 * time.Second

// simHangFor is how long a hung token POST hangs before it fails, in
// fake time: past the flight's deadline (refreshTimeout).
const simHangFor = refreshTimeout + 5*time.Second

// The errors the simulated Store, Locker and network return. Callers'
// errors must wrap one of them, or another cause the oracle knows.
var (
	errSimStore     = errors.New("simstore: unavailable")
	errSimLockLost  = fmt.Errorf("simstore: lease expired or session ended: %w", ErrLockLost)
	errSimLockReply = errors.New("simstore: lock reply lost")
	errSimDead      = errors.New("sim: the process has crashed")
	errSimNet       = errors.New("simnet: connection reset")
	errSimTimeout   = simTimeoutError{}
)

type simTimeoutError struct{}

func (simTimeoutError) Error() string   { return "simnet: i/o timeout" }
func (simTimeoutError) Timeout() bool   { return true }
func (simTimeoutError) Temporary() bool { return true }

// simWorld is one schedule's world. mu guards everything below it
// except mono, which only the driver writes, at quiescence.
type simWorld struct {
	cfg simConfig

	mono atomic.Int64 // true Mono reading shared by the live clocks

	mu     sync.Mutex
	cond   *sync.Cond // signalled when active reaches 0, or stuck is set
	active int        // goroutines that may run
	stuck  bool       // the watchdog fired

	parked   []*simPark
	timers   []*simTimer
	timerSeq int

	// The Save-retry timers, which a goroutine of the engine waits for
	// while the goroutine that started one goes on (detached): by
	// source, the goroutines woken by one that fired and about to start
	// a flight; the timers of crashed processes, which never fire.
	gkeys      map[uint64]simSrc // goroutine -> the source it works for
	retryWoken map[simSrc]int
	deadTimers []*simTimer

	rechecks map[simSrc]int // Loads answered at once, by source

	ops      []*simOp // every caller started, by id
	returned []*simOp // callers returned since the driver last looked

	incs []*simInc  // every incarnation, by replica then generation
	reps []*simInc  // the current incarnation of each replica
	srv  *simServer // the token endpoint and the API
	keys []string   // every grant key
	st   map[string]*simKey

	flightsAlive int

	rnd         *simRand // the driver's choices; only the driver uses it
	draining    bool
	drainStarts map[simSrc]int // flights started while draining, by source
	drainFaults int            // steps of the drain during which faults still happen

	trace      []string
	pending    []string // notes of the step under way, sorted into the trace after it
	violations []string
	windows    map[string]int // inherent windows hit, by kind
	revokedBy  map[string]string
	stats      simStats
}

type simStats struct {
	steps, posts, rotations, saves, loads, crashes, rollbacks, lockKills, ops int
}

// simInc is one incarnation of a replica: a process, from its start to
// its crash or the end of the schedule.
type simInc struct {
	w    *simWorld
	rep  int
	gen  int
	name string // "r1.0": replica 1, first incarnation

	dead     atomic.Bool
	zombie   atomic.Bool  // dead, at the end of the schedule: its calls succeed and change nothing
	deadMono atomic.Int64 // the dead clock's own time: its timers fire at once
	skew     time.Duration
	clk      *simClock

	grants  *Grants
	singles map[string]*TokenSource // the grants served by a TokenSource of their own
	obs     *Observer
	tokenRT http.RoundTripper // the token endpoint, as this process reaches it
	api     http.RoundTripper // the API, as this process reaches it

	// The following are guarded by w.mu.
	observed  map[string]int           // grant -> the highest refresh-token index this process has seen
	clean     map[string]int           // the same, leaving out what it got while its lock was lost, or held when it lost it
	seen      map[string]map[int]bool  // grant -> the refresh tokens it has seen
	rotated   map[string]map[int]bool  // grant -> those it saw before it saw a newer one: it saw them rotated away
	via       map[string]string        // grant -> how it saw its highest refresh token
	sess      map[string]*simSession   // grant -> the lock this process holds for it
	alive     map[*simFlight]bool      // its flights under way
	current   map[string]*simFlight    // grant -> its flight under way that the Observer reported
	got       map[string]int           // grant -> the highest refresh token it got from the endpoint
	lastTok   map[string]*oauth2.Token // grant -> the last token a caller got
	flights   map[string]int           // grant -> flights started, to name them
	waitOp    map[string]*simOp        // grant -> the Wait caller running for it
	revokedCB map[string]int           // OnRevoked calls by grant
}

// source returns the TokenSource serving key in inc.
func (inc *simInc) source(key string) *TokenSource {
	if ts := inc.singles[key]; ts != nil {
		return ts
	}
	return inc.grants.Source(key)
}

// transport returns the RoundTripper through which inc's callers reach
// the API for key.
func (inc *simInc) transport(key string) http.RoundTripper {
	if ts := inc.singles[key]; ts != nil {
		return &Transport{Source: ts, Base: inc.api}
	}
	return inc.grants.Transport(inc.api)
}

// simKey is the Store's record of one grant.
type simKey struct {
	tok     *oauth2.Token // nil when nothing is stored
	history []*oauth2.Token
	maxHeld int // the highest refresh-token index ever stored
	holder  *simSession
	everAT  map[string]bool // access tokens ever stored

	lockFaulted bool // a lock was lost while held: one POST per expiry is not checked
	rolledBack  bool // the Store rolled back at least once
}

// simSession is one holding of a grant's lock.
type simSession struct {
	key      string
	inc      *simInc
	f        *simFlight
	lease    time.Duration // Mono reading at which a lease-mode lock ends
	lost     bool
	reported bool // the Store told its holder that the lock is lost
	orphan   bool // its holder crashed: a lease outlives it
}

// simFlight is one flight of a source, as the Observer saw it.
type simFlight struct {
	name    string // "r1.0/g0#3"
	inc     *simInc
	key     string
	reason  RefreshReason
	waiters map[*simOp]bool
	waitOp  *simOp // a Wait caller waiting for it
	ended   bool
	forced  bool  // a Refresh caller waits for it: it may refresh a token not due
	posted  []int // the refresh tokens it presented
	loadErr bool  // its last Load failed
}

// simOp is one caller.
type simOp struct {
	id       int
	inc      *simInc
	key      string
	kind     string
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Duration // Mono; 0 for none
	state    int           // opRunning, opWaiting, opDone
	on       *simFlight    // the flight it waits for
	res      simOpResult
	late     bool // reported as waiting past its deadline
}

type simOpResult struct {
	tok    *oauth2.Token
	status int
	err    error
}

const (
	opRunning = iota
	opWaiting
	opDone
)

type (
	simOpKey     struct{}
	simFlightKey struct{}
)

func opFrom(ctx context.Context) *simOp {
	op, _ := ctx.Value(simOpKey{}).(*simOp)
	return op
}

func flightFrom(ctx context.Context) *simFlight {
	f, _ := ctx.Value(simFlightKey{}).(*simFlight)
	return f
}

// sleepLocked counts out the goroutine that calls it. w.mu must be held.
func (w *simWorld) sleepLocked() {
	w.active--
	if w.active < 0 {
		panic("sim: active goroutine count below zero: a goroutine was counted out twice (does the engine wait somewhere new, or start another kind of timer? see simDetachedTimer)")
	}
	if w.active == 0 {
		w.cond.Broadcast()
	}
}

// quiesce waits until no goroutine of the simulation may run. It reports
// false if the watchdog fired first: something runs that the simulation
// does not control, or a goroutine never parks (a caller stuck past its
// deadline).
func (w *simWorld) quiesce() bool {
	wd := time.AfterFunc(simWatchdog, func() {
		w.mu.Lock()
		w.stuck = true
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer wd.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.active > 0 && !w.stuck {
		w.cond.Wait()
	}
	return !w.stuck
}

// simWatchdog bounds one wait for quiescence in real time. It is a
// generous bound: a step takes microseconds. PANDADOCAUTH_SIM_WATCHDOG
// shortens it when hunting a schedule that gets stuck, and
// PANDADOCAUTH_SIM_STACKS adds every goroutine's stack to its trace.
var simWatchdog = func() time.Duration {
	if v, err := time.ParseDuration(os.Getenv("PANDADOCAUTH_SIM_WATCHDOG")); err == nil {
		return v
	}
	return 60 * time.Second
}()

func (w *simWorld) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%d ", w.stats.steps)+fmt.Sprintf(format, args...))
}

// violate records a violation of the oracle. w.mu must be held.
func (w *simWorld) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.violations = append(w.violations, fmt.Sprintf("step %d: %s", w.stats.steps, msg))
	w.pending = append(w.pending, "   !! "+msg)
}

// window records a presentation of a rotated-away refresh token that
// the engine cannot prevent. w.mu must be held.
func (w *simWorld) window(kind, format string, args ...any) {
	w.windows[kind]++
	w.pending = append(w.pending, "   ~~ inherent window ("+kind+"): "+fmt.Sprintf(format, args...))
}

// ---- clocks

// simClock is one incarnation's clock: true time plus the replica's
// skew. Timers fire when the driver advances time; their durations are
// rounded up to whole seconds, the driver's smallest step, so that the
// engine's jittered retry waits all end at the same step. A crashed
// incarnation's clock fires its timers at once, moving its own time on:
// nothing it does reaches the world any more.
type simClock struct {
	inc *simInc
}

func (c *simClock) monoNow() time.Duration {
	if c.inc.dead.Load() {
		return time.Duration(c.inc.deadMono.Load())
	}
	return time.Duration(c.inc.w.mono.Load())
}

func (c *simClock) Now() time.Time {
	return simEpoch.Add(c.monoNow() - simMonoBase + c.inc.skew)
}

func (c *simClock) Mono() time.Duration { return c.monoNow() }

type simTimer struct {
	at       time.Duration
	seq      int
	inc      *simInc
	ch       chan time.Time
	detached bool   // a goroutine of its own waits for it, not the one that started it
	key      string // a detached timer's grant
}

func (c *simClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	w := c.inc.w
	ch := make(chan time.Time, 1)
	detached := simDetachedTimer()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.inc.dead.Load() && !detached {
		c.inc.deadMono.Add(int64(max(d, 0)))
		ch <- c.Now()
		return ch, func() bool { return false }
	}
	if d <= 0 && !detached {
		ch <- c.Now()
		return ch, func() bool { return false }
	}
	rounded := (max(d, 0) + time.Second - 1) / time.Second * time.Second
	w.timerSeq++
	t := &simTimer{at: time.Duration(w.mono.Load()) + rounded, seq: w.timerSeq, inc: c.inc, ch: ch, detached: detached}
	switch {
	case detached && c.inc.dead.Load():
		// A crashed process's timers never fire; Wait, at the end,
		// stops it.
		t.key = w.gkeys[simGoid()].key
		w.deadTimers = append(w.deadTimers, t)
	case detached:
		t.key = w.gkeys[simGoid()].key
		w.timers = append(w.timers, t)
	default:
		w.timers = append(w.timers, t)
		// The goroutine that starts a timer waits for it.
		w.sleepLocked()
	}
	stop := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, list := range []*[]*simTimer{&w.timers, &w.deadTimers} {
			for i, o := range *list {
				if o == t {
					*list = append((*list)[:i], (*list)[i+1:]...)
					if !detached {
						w.active++ // it did not wait after all
					}
					return true
				}
			}
		}
		return false
	}
	return ch, stop
}

// simDetachedTimer reports whether NewTimer's caller is the engine's
// Save-retry timer (armSaveRetry), which a goroutine of its own waits
// for.
func simDetachedTimer() bool {
	var pcs [4]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs[:])])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, ".armSaveRetry") {
			return true
		}
		if !more {
			return false
		}
	}
}

var _ clock = (*simClock)(nil)

// fireLocked fires t. w.mu must be held.
//
// The goroutine waiting for a detached timer starts a Save-retry flight
// unless a flight of its source is under way; it is counted until then
// (RefreshStart). Detached timers fire one at a time, at quiescence, so
// that no flight starts or lands meanwhile.
func (w *simWorld) fireLocked(t *simTimer) {
	for i, o := range w.timers {
		if o == t {
			w.timers = append(w.timers[:i], w.timers[i+1:]...)
			break
		}
	}
	if t.detached {
		src := simSrc{t.inc, t.key}
		if w.flyingLocked(src) {
			t.ch <- t.inc.clk.Now() // it finds the flight and does nothing
			return
		}
		w.retryWoken[src]++
	}
	w.active++
	t.ch <- t.inc.clk.Now()
}

// flyingLocked reports whether a flight of src is under way. w.mu must
// be held.
func (w *simWorld) flyingLocked(src simSrc) bool {
	for f := range src.inc.alive {
		if f.key == src.key {
			return true
		}
	}
	return false
}

// ---- parking

// simPark is a call parked at the driver: a Store Load or Save, a Lock,
// or a token POST.
type simPark struct {
	kind  string // "load", "save", "lock", "post"
	inc   *simInc
	key   string
	f     *simFlight
	tok   *oauth2.Token // Save's token
	rt    string        // the refresh token a POST presents
	ch    chan simReply
	hung  time.Duration // a hung POST answers from this Mono reading on; 0 if not hung
	slept int           // steps it was passed over (for the trace)
}

func (p *simPark) id() string {
	return p.inc.name + "/" + p.key + "/" + p.kind
}

type simReply struct {
	tok    *oauth2.Token
	err    error
	unlock func()
	status int
	header http.Header
	body   string
}

// park parks the calling goroutine at the driver and returns the
// driver's answer. A crashed process's calls fail at once.
func (w *simWorld) park(p *simPark) simReply {
	w.mu.Lock()
	w.gkeys[simGoid()] = simSrc{p.inc, p.key}
	w.mu.Unlock()
	if p.inc.zombie.Load() {
		return w.zombie(p)
	}
	w.mu.Lock()
	if p.inc.dead.Load() {
		w.mu.Unlock()
		return simReply{err: errSimDead}
	}
	if p.f == nil {
		// A flight reported late (it went on from a Store check after a
		// permanent failure) calls with its first caller's context.
		p.f = p.inc.current[p.key]
	}
	if p.kind == "load" && p.f == nil {
		// A flight not reported to the Observer (yet): one that only
		// reads the Store after a permanent failure, and goes on only if
		// it holds a newer token. Its caller is counted as running, so
		// the read is answered at once.
		defer w.mu.Unlock()
		return w.recheckLocked(p)
	}
	p.ch = make(chan simReply, 1)
	w.parked = append(w.parked, p)
	if p.kind == "post" {
		w.presentLocked(p)
	}
	w.sleepLocked()
	w.mu.Unlock()
	return <-p.ch
}

// recheckLocked answers a Load of a flight not reported yet. Its
// faults are drawn from the seed, the step and the source, not from the
// driver's stream: callers running side by side may read in any order.
// w.mu must be held.
func (w *simWorld) recheckLocked(p *simPark) simReply {
	w.rechecks[simSrc{p.inc, p.key}]++
	h := fnv.New64a()
	fmt.Fprint(h, w.cfg.seed, w.stats.steps, p.inc.name, p.key, w.rechecks[simSrc{p.inc, p.key}])
	if faults := !w.draining || w.drainFaults > 0; faults && int(h.Sum64()%1000) < w.cfg.storeErr {
		w.pending = append(w.pending, fmt.Sprintf("   recheck load %s: error", p.id()))
		return simReply{err: fmt.Errorf("load %s: %w", p.key, errSimStore)}
	}
	t := simCopy(w.st[p.key].tok)
	if t != nil {
		p.inc.see(p.key, rtIndex(t), fmt.Sprintf("a Load at step %d", w.stats.steps), true)
	}
	w.pending = append(w.pending, fmt.Sprintf("   recheck load %s: rt%d/at%d", p.id(), rtIndex(t), atIndex(t)))
	return simReply{tok: t}
}

// zombie answers the calls of a crashed process at the end of its
// schedule, so that its Save retries end (a real one ends with its
// process): Locks and Saves succeed and change nothing, a Load returns
// the token it serves, a POST fails.
func (w *simWorld) zombie(p *simPark) simReply {
	switch p.kind {
	case "lock":
		return simReply{unlock: func() {}}
	case "load":
		tok, _ := simServed(p.inc.source(p.key))
		return simReply{tok: simCopy(tok)}
	case "save":
		return simReply{}
	}
	return simReply{err: errSimDead}
}

// answerLocked answers p and wakes its goroutine. w.mu must be held.
func (w *simWorld) answerLocked(p *simPark, r simReply) {
	for i, o := range w.parked {
		if o == p {
			w.parked = append(w.parked[:i], w.parked[i+1:]...)
			break
		}
	}
	w.active++
	p.ch <- r
}

// sortedParkedLocked returns the parked calls in a deterministic order.
func (w *simWorld) sortedParkedLocked() []*simPark {
	ps := append([]*simPark(nil), w.parked...)
	sort.Slice(ps, func(i, j int) bool { return ps[i].id() < ps[j].id() })
	return ps
}

// ---- the Store and the Locker

// simKeyed is the shared Store as one process reaches it, for its
// Grants: a KeyedStore and a KeyedLocker.
type simKeyed struct{ inc *simInc }

func (s *simKeyed) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	r := s.inc.w.park(&simPark{kind: "load", inc: s.inc, key: key, f: flightFrom(ctx)})
	return r.tok, r.err
}

func (s *simKeyed) Save(ctx context.Context, key string, t *oauth2.Token) error {
	r := s.inc.w.park(&simPark{kind: "save", inc: s.inc, key: key, f: flightFrom(ctx), tok: simCopy(t)})
	return r.err
}

func (s *simKeyed) Lock(ctx context.Context, key string) (func(), error) {
	r := s.inc.w.park(&simPark{kind: "lock", inc: s.inc, key: key, f: flightFrom(ctx)})
	return r.unlock, r.err
}

var (
	_ KeyedStore  = (*simKeyed)(nil)
	_ KeyedLocker = (*simKeyed)(nil)
)

// simSingle is the shared Store seen as the Store and Locker of one
// grant, for a TokenSource of its own.
type simSingle struct {
	keyed *simKeyed
	key   string
}

func (s *simSingle) Load(ctx context.Context) (*oauth2.Token, error) {
	return s.keyed.Load(ctx, s.key)
}

func (s *simSingle) Save(ctx context.Context, t *oauth2.Token) error {
	return s.keyed.Save(ctx, s.key, t)
}

func (s *simSingle) Lock(ctx context.Context) (func(), error) {
	return s.keyed.Lock(ctx, s.key)
}

// grantKey names the grant in the Observer's events.
func (s *simSingle) grantKey() string { return s.key }

var (
	_ Store  = (*simSingle)(nil)
	_ Locker = (*simSingle)(nil)
)

// simCopy copies a token as a Store that encodes it would: the fields,
// not the extras.
func simCopy(t *oauth2.Token) *oauth2.Token {
	if t == nil {
		return nil
	}
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, RefreshToken: t.RefreshToken, Expiry: t.Expiry, ExpiresIn: t.ExpiresIn}
}

// ---- the Observer

// newObserver returns the Observer of inc: it tracks flights and the
// callers waiting for them.
func (inc *simInc) newObserver() *Observer {
	w := inc.w
	return &Observer{
		RefreshStart: func(ctx context.Context, info RefreshStartInfo) context.Context {
			w.mu.Lock()
			defer w.mu.Unlock()
			key := info.Grant
			inc.flights[key]++
			f := &simFlight{
				name:    fmt.Sprintf("%s/%s#%d", inc.name, key, inc.flights[key]),
				inc:     inc,
				key:     key,
				reason:  info.Reason,
				waiters: map[*simOp]bool{},
			}
			w.active++ // the flight's goroutine
			w.flightsAlive++
			inc.alive[f] = true
			inc.current[key] = f
			op := opFrom(ctx)
			src := simSrc{inc, key}
			if w.draining {
				w.drainStarts[src]++
			}
			switch {
			case op == nil && info.Reason == ReasonSave && w.retryWoken[src] > 0:
				// The goroutine of a Save-retry timer started it, and
				// ends.
				w.retryWoken[src]--
				w.sleepLocked()
			case op != nil && op.inc == inc && info.Reason != ReasonEarly && info.Reason != ReasonSave:
				// A caller that found no usable token starts the flight
				// and waits for it.
				w.waitLocked(op, f)
			case op == nil && info.Reason == ReasonSave && inc.waitOp[key] != nil && inc.waitOp[key].state == opRunning:
				// Wait saves an unsaved token on a flight it waits for.
				f.waitOp = inc.waitOp[key]
				f.waitOp.state = opWaiting
				w.sleepLocked()
			}
			return context.WithValue(ctx, simFlightKey{}, f)
		},
		RefreshJoin: func(flight, caller context.Context) {
			w.mu.Lock()
			defer w.mu.Unlock()
			f, op := flightFrom(flight), opFrom(caller)
			if f != nil && op != nil {
				w.waitLocked(op, f)
			}
		},
		RefreshDone: func(ctx context.Context, info RefreshDoneInfo) {
			w.mu.Lock()
			defer w.mu.Unlock()
			f := flightFrom(ctx)
			if f == nil {
				return
			}
			f.ended = true
			w.flightsAlive--
			delete(f.inc.alive, f)
			if f.inc.current[f.key] == f {
				delete(f.inc.current, f.key)
			}
			w.sleepLocked() // the flight's goroutine ends
			ops := make([]*simOp, 0, len(f.waiters))
			for op := range f.waiters {
				ops = append(ops, op)
			}
			for _, op := range ops {
				w.wakeLocked(op)
			}
			if op := f.waitOp; op != nil && op.state == opWaiting {
				op.state = opRunning
				w.active++
			}
		},
	}
}

// waitLocked records that op waits for f. w.mu must be held.
func (w *simWorld) waitLocked(op *simOp, f *simFlight) {
	if op.state != opRunning {
		panic("sim: a caller waits twice: " + op.kind)
	}
	op.state = opWaiting
	op.on = f
	f.waiters[op] = true
	if op.kind == "refresh" {
		f.forced = true
	}
	w.sleepLocked()
}

// wakeLocked wakes op, waiting for a flight. w.mu must be held.
func (w *simWorld) wakeLocked(op *simOp) {
	if op.state != opWaiting {
		return
	}
	if op.on != nil {
		delete(op.on.waiters, op)
		op.on = nil
	}
	op.state = opRunning
	w.active++
}

// ---- callers

// startOp starts a caller on a goroutine of its own. run does the work
// and describes the outcome.
func (w *simWorld) startOp(inc *simInc, key, kind string, timeout time.Duration, run func(ctx context.Context, op *simOp) simOpResult) *simOp {
	w.mu.Lock()
	op := &simOp{id: len(w.ops) + 1, inc: inc, key: key, kind: kind}
	ctx := context.WithValue(context.Background(), simOpKey{}, op)
	op.ctx, op.cancel = context.WithCancel(ctx)
	if timeout > 0 {
		op.deadline = time.Duration(w.mono.Load()) + timeout
	}
	w.ops = append(w.ops, op)
	w.active++
	w.stats.ops++
	if kind == "wait" {
		inc.waitOp[key] = op
	}
	w.mu.Unlock()
	go func() {
		if kind == "wait" {
			w.mu.Lock()
			w.gkeys[simGoid()] = simSrc{inc, key}
			w.mu.Unlock()
		}
		res := run(op.ctx, op)
		w.mu.Lock()
		op.res = res
		op.state = opDone
		op.on = nil
		w.returned = append(w.returned, op)
		if kind == "wait" && inc.waitOp[key] == op {
			delete(inc.waitOp, key)
		}
		w.sleepLocked()
		w.mu.Unlock()
	}()
	return op
}

// cancelOps ends the contexts of ops (outside w.mu: cancelling runs no
// simulation code, but the engine's goroutines wake).
func (w *simWorld) cancelOps(ops []*simOp) {
	for _, op := range ops {
		op.cancel()
	}
}

// ---- helpers

// simIndex returns the index in a token value such as "g0-rt-SECRET-4",
// or -1.
func simIndex(v string) int {
	i := strings.LastIndexByte(v, '-')
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(v[i+1:])
	if err != nil {
		return -1
	}
	return n
}

// simGrantOf returns the grant of a token value such as "g0-rt-SECRET-4".
func simGrantOf(v string) string {
	g, _, _ := strings.Cut(v, "-")
	return g
}

func rtIndex(t *oauth2.Token) int {
	if t == nil {
		return -1
	}
	return simIndex(t.RefreshToken)
}

func atIndex(t *oauth2.Token) int {
	if t == nil {
		return -1
	}
	return simIndex(t.AccessToken)
}

// simUnsaved reports whether the token s serves is one whose Save
// failed.
func simUnsaved(s *TokenSource) bool {
	_, unsaved := simServed(s)
	return unsaved
}

// simServed returns the token s serves, and whether its Save failed.
func simServed(s *TokenSource) (*oauth2.Token, bool) {
	ct := s.cache.Load()
	if ct == nil {
		return nil, false
	}
	return ct.tok, ct.unsaved
}

// see records that inc has seen refresh token idx of key, as how says;
// clean is false for an answer that came while its lock was lost. w.mu
// must be held.
func (inc *simInc) see(key string, idx int, how string, clean bool) {
	if inc.seen[key] == nil {
		inc.seen[key], inc.rotated[key] = map[int]bool{}, map[int]bool{}
	}
	for k := range inc.seen[key] {
		if k < idx {
			inc.rotated[key][k] = true
		}
	}
	inc.seen[key][idx] = true
	if idx > inc.observed[key] {
		inc.observed[key] = idx
		inc.via[key] = how
	}
	if clean {
		inc.clean[key] = max(inc.clean[key], idx)
	}
}

// simForget drops what the test binary's hooks keep about s.
func simForget(s *TokenSource) {
	joins.mu.Lock()
	delete(joins.n, s)
	joins.mu.Unlock()
}

// simSrc names a source: a grant in a process.
type simSrc struct {
	inc *simInc
	key string
}

// simGoid returns the calling goroutine's id, from its stack header
// ("goroutine 18 [running]:").
func simGoid() uint64 {
	var b [40]byte
	n := runtime.Stack(b[:], false)
	s := b[len("goroutine "):n]
	if i := bytes.IndexByte(s, ' '); i > 0 {
		s = s[:i]
	}
	id, _ := strconv.ParseUint(string(s), 10, 64)
	return id
}
