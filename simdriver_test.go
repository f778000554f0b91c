package pandadocauth

// The driver of the fleet simulation: at each step, at quiescence, it
// chooses from the schedule's seed what happens next, carries it out on
// the world (simworld_test.go), and at the end drains the fleet.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
	"time"

	"golang.org/x/oauth2"
)

// settle waits for quiescence, then records the callers that returned
// and the notes of the step, and checks deadlines. It reports false if
// the world is stuck.
func (w *simWorld) settle() bool {
	ok := w.quiesce()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !ok {
		w.violate("stuck: a goroutine neither parked nor returned within %v of real time (active %d)", simWatchdog, w.active)
		if os.Getenv("PANDADOCAUTH_SIM_STACKS") != "" {
			buf := make([]byte, 1<<20)
			w.pending = append(w.pending, string(buf[:runtime.Stack(buf, true)]))
			for src, n := range w.retryWoken {
				if n != 0 {
					w.pending = append(w.pending, fmt.Sprintf("retry woken %s/%q: %d", src.inc.name, src.key, n))
				}
			}
			for _, op := range w.ops {
				if op.state != opDone {
					w.pending = append(w.pending, fmt.Sprintf("op%d %s state %d", op.id, op.kind, op.state))
				}
			}
			w.pending = append(w.pending, fmt.Sprintf("flights alive %d, parked %d, timers %d, dead timers %d", w.flightsAlive, len(w.parked), len(w.timers), len(w.deadTimers)))
		}
		w.flushNotesLocked()
		return false
	}
	sort.Slice(w.returned, func(i, j int) bool { return w.returned[i].id < w.returned[j].id })
	for _, op := range w.returned {
		out := "(crashed)"
		if !op.inc.dead.Load() {
			// (A crashed process's caller saw its context end and its
			// calls fail at once: which came first is the scheduler's
			// choice, and nothing it got is used.)
			out = w.checkOpLocked(op)
		}
		w.logf("  op%d %s %s/%s -> %s", op.id, op.kind, op.inc.name, op.key, out)
	}
	w.returned = nil
	w.checkDeadlinesLocked()
	w.flushNotesLocked()
	return true
}

func (w *simWorld) flushNotesLocked() {
	sort.Strings(w.pending)
	w.trace = append(w.trace, w.pending...)
	w.pending = nil
}

// releasableLocked returns the parked calls the driver may answer now,
// and their weights.
func (w *simWorld) releasableLocked() ([]*simPark, []int) {
	now := time.Duration(w.mono.Load())
	var ps []*simPark
	var ws []int
	for _, p := range w.sortedParkedLocked() {
		switch {
		case p.kind == "post" && p.hung != 0:
			if now < p.hung {
				continue
			}
			ps, ws = append(ps, p), append(ws, 10)
		case p.kind == "lock" && w.st[p.key].holder != nil:
			if w.cfg.lockErr > 0 && !w.draining {
				ps, ws = append(ps, p), append(ws, 1) // it may fail waiting
			}
		default:
			ps, ws = append(ps, p), append(ws, 10)
		}
	}
	return ps, ws
}

// fireDue fires a Save-retry timer that is due already (one started
// for a Save retry that was due when it was armed), as a real clock
// would at once. It reports whether it fired one.
func (w *simWorld) fireDue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	due := w.dueLocked(time.Duration(w.mono.Load()), true)
	if len(due) == 0 {
		return false
	}
	w.logf("  save-retry timer of %s/%s fires", due[0].inc.name, due[0].key)
	w.fireLocked(due[0])
	return true
}

// step takes one step of the schedule.
func (w *simWorld) step() {
	if w.fireDue() {
		return
	}
	w.mu.Lock()
	w.stats.steps++
	ps, pws := w.releasableLocked()
	w.mu.Unlock()
	var (
		names   []string
		weights []int
	)
	add := func(name string, weight int) {
		names, weights = append(names, name), append(weights, weight)
	}
	if len(ps) > 0 {
		add("answer", 55)
	}
	add("advance", 14)
	add("op", 22)
	add("invalidate", 2)
	add("storm", 2)
	if w.cfg.crashes {
		add("crash", 2)
	}
	if w.cfg.rollbacks {
		add("rollback", 1)
	}
	if w.cfg.lockFaults {
		add("kill-lock", 2)
	}
	switch names[w.rnd.pick(weights)] {
	case "answer":
		w.answer(ps[w.rnd.pick(pws)])
	case "advance":
		w.advance(w.drawAdvance())
	case "op":
		w.randomOp()
	case "invalidate":
		w.invalidate()
	case "storm":
		w.storm()
	case "crash":
		w.crash(w.reps[w.rnd.IntN(len(w.reps))])
	case "rollback":
		w.rollback()
	case "kill-lock":
		w.killLock()
	}
}

// drawAdvance chooses how far time moves.
func (w *simWorld) drawAdvance() time.Duration {
	switch w.rnd.pick([]int{30, 25, 15, 10, 20}) {
	case 0:
		return time.Second
	case 1:
		return 5 * time.Second
	case 2:
		return 30 * time.Second
	case 3:
		return 2 * time.Minute
	}
	// To the next token's early-refresh window, or past its expiry.
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Duration(w.mono.Load())
	next := time.Duration(0)
	for _, key := range w.keys {
		g := w.srv.grants[key]
		exp := g.atExpiry[g.atSeq]
		for _, at := range []time.Duration{exp - 5*time.Minute, exp - 30*time.Second, exp - 5*time.Second, exp + time.Second} {
			if at > now && (next == 0 || at < next) {
				next = at
			}
		}
	}
	if next == 0 {
		return time.Minute
	}
	return (next - now + time.Second - 1) / time.Second * time.Second
}

// advance moves true time on by d: leases end, timers fire, callers
// whose deadline has passed see their context end.
func (w *simWorld) advance(d time.Duration) {
	w.mu.Lock()
	now := time.Duration(w.mono.Load()) + d
	w.mono.Store(int64(now))
	w.logf("advance %v", d)
	for _, key := range w.keys {
		st := w.st[key]
		if s := st.holder; s != nil && w.cfg.lease && now >= s.lease {
			s.lost = true
			st.holder = nil
			if !s.orphan {
				st.lockFaulted = true
				w.exposeLocked(s)
				w.logf("  lease of %s's lock of %s expired while held", s.inc.name, key)
			}
		}
	}
	for _, t := range w.dueLocked(now, false) {
		w.fireLocked(t)
	}
	var late []*simOp
	for _, op := range w.ops {
		if op.state != opDone && op.deadline != 0 && now >= op.deadline {
			w.wakeLocked(op)
			late = append(late, op)
		}
	}
	w.mu.Unlock()
	w.cancelOps(late)
	// The Save-retry timers, one at a time, once the rest has settled.
	for {
		w.mu.Lock()
		due := w.dueLocked(now, true)
		w.mu.Unlock()
		if len(due) == 0 || !w.settle() {
			return
		}
		w.mu.Lock()
		w.logf("  save-retry timer of %s/%s fires", due[0].inc.name, due[0].key)
		w.fireLocked(due[0])
		w.mu.Unlock()
	}
}

// dueLocked returns the timers due at now, detached or not, in the order
// they fire. w.mu must be held.
func (w *simWorld) dueLocked(now time.Duration, detached bool) []*simTimer {
	var due []*simTimer
	for _, t := range w.timers {
		if t.at <= now && t.detached == detached {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at < due[j].at || due[i].at == due[j].at && due[i].seq < due[j].seq })
	return due
}

// answer answers the parked call p, choosing its outcome.
func (w *simWorld) answer(p *simPark) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r, ok := w.outcomeLocked(p); ok {
		w.answerLocked(p, r)
	}
}

// outcomeLocked chooses and carries out the answer to p. It reports
// false if p is not answered now (a POST that hangs). w.mu must be held.
func (w *simWorld) outcomeLocked(p *simPark) (simReply, bool) {
	st := w.st[p.key]
	sess := p.inc.sess[p.key]
	faults := !w.draining || w.drainFaults > 0
	storeErr, ghost, postFault, lockErr := w.cfg.storeErr, w.cfg.ghostSave, w.cfg.postFault, w.cfg.lockErr
	if !faults {
		storeErr, ghost, postFault, lockErr = 0, 0, 0, 0
	}
	switch p.kind {
	case "load":
		w.stats.loads++
		if sess != nil && sess.lost {
			sess.reported = true
			if p.f != nil {
				p.f.loadErr = true
			}
			w.logf("load %s: lock lost", p.id())
			return simReply{err: errSimLockLost}, true
		}
		if p.f != nil {
			p.f.loadErr = true
		}
		if w.rnd.permille(storeErr) {
			w.logf("load %s: error", p.id())
			return simReply{err: fmt.Errorf("load %s: %w", p.key, errSimStore)}, true
		}
		if p.f != nil {
			p.f.loadErr = false
		}
		t := simCopy(st.tok)
		if t != nil {
			p.inc.see(p.key, rtIndex(t), fmt.Sprintf("a Load at step %d", w.stats.steps), true)
		}
		w.logf("load %s: rt%d/at%d", p.id(), rtIndex(t), atIndex(t))
		return simReply{tok: t}, true
	case "save":
		if sess != nil && sess.lost {
			sess.reported = true
			w.logf("save %s rt%d/at%d: lock lost", p.id(), rtIndex(p.tok), atIndex(p.tok))
			return simReply{err: errSimLockLost}, true
		}
		if w.rnd.permille(storeErr) {
			w.logf("save %s rt%d/at%d: error", p.id(), rtIndex(p.tok), atIndex(p.tok))
			return simReply{err: fmt.Errorf("save %s: %w", p.key, errSimStore)}, true
		}
		w.applySaveLocked(p)
		if w.rnd.permille(ghost) {
			w.logf("save %s rt%d/at%d: applied, reported failed", p.id(), rtIndex(p.tok), atIndex(p.tok))
			return simReply{err: fmt.Errorf("save %s: %w", p.key, errSimStore)}, true
		}
		w.logf("save %s rt%d/at%d: ok", p.id(), rtIndex(p.tok), atIndex(p.tok))
		return simReply{}, true
	case "lock":
		if st.holder != nil {
			w.logf("lock %s: held by %s; the wait fails", p.id(), st.holder.inc.name)
			return simReply{err: fmt.Errorf("lock %s: %w", p.key, errSimStore)}, true
		}
		if w.rnd.permille(lockErr) {
			w.logf("lock %s: error", p.id())
			return simReply{err: fmt.Errorf("lock %s: %w", p.key, errSimStore)}, true
		}
		if w.cfg.lockFaults && faults && w.rnd.IntN(20) == 0 {
			// The request took the lock, its answer was lost, and the
			// Locker gave the lock back (as redisstore does): the caller
			// sees only the error.
			w.logf("lock %s: reply lost; released", p.id())
			return simReply{err: fmt.Errorf("lock %s: %w", p.key, errSimLockReply)}, true
		}
		sess := &simSession{key: p.key, inc: p.inc, f: p.f, lease: time.Duration(w.mono.Load()) + simLeaseTTL}
		st.holder = sess
		p.inc.sess[p.key] = sess
		w.logf("lock %s: granted", p.id())
		return simReply{unlock: w.unlockFunc(sess)}, true
	case "post":
		if p.hung != 0 {
			w.logf("post %s rt%d: timeout after hanging", p.id(), simIndex(p.rt))
			r, _ := w.postLocked(p, "timeout", false)
			return r, true
		}
		i := 0 // ok
		if w.rnd.permille(postFault) {
			ws := make([]int, len(simPostOutcomes))
			for j, o := range simPostOutcomes {
				ws[j] = o.weight
			}
			i = w.rnd.pick(ws)
		}
		o := simPostOutcomes[i]
		if o.name == "hang" {
			p.hung = time.Duration(w.mono.Load()) + simHangFor
			w.logf("post %s rt%d: hangs", p.id(), simIndex(p.rt))
			return simReply{}, false // it stays parked
		}
		r, note := w.postLocked(p, o.name, o.processed)
		w.logf("post %s rt%d: %s", p.id(), simIndex(p.rt), note)
		return r, true
	}
	panic("sim: unknown park kind " + p.kind)
}

// exposeLocked records that the holder of s lost its lock: a refresh
// token it holds that the Store does not is no longer protected by the
// lock, and another process may refresh with the one it replaced before
// the holder learns of the loss. w.mu must be held.
func (w *simWorld) exposeLocked(s *simSession) {
	if cur := rtIndex(w.st[s.key].tok); s.inc.clean[s.key] > cur {
		s.inc.clean[s.key] = cur
	}
}

// unlockFunc returns the unlock of sess: it lets go of the lock if sess
// still holds it.
func (w *simWorld) unlockFunc(sess *simSession) func() {
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if st := w.st[sess.key]; st.holder == sess {
			st.holder = nil
		}
		if sess.inc.sess[sess.key] == sess {
			delete(sess.inc.sess, sess.key)
		}
	}
}

// randomOp starts a caller on a live process.
func (w *simWorld) randomOp() {
	inc := w.reps[w.rnd.IntN(len(w.reps))]
	key := w.keys[w.rnd.IntN(len(w.keys))]
	timeout := []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}[w.rnd.IntN(4)]
	switch w.rnd.pick([]int{40, 35, 10}) {
	case 0:
		w.opToken(inc, key, timeout)
	case 1:
		w.opAPI(inc, key, timeout)
	case 2:
		op := w.startOp(inc, key, "refresh", timeout, func(ctx context.Context, op *simOp) simOpResult {
			tok, err := inc.source(key).Refresh(ctx)
			return simOpResult{tok: tok, err: err}
		})
		w.logf("op%d refresh %s/%s timeout=%v", op.id, inc.name, key, timeout)
	}
}

func (w *simWorld) opToken(inc *simInc, key string, timeout time.Duration) {
	op := w.startOp(inc, key, "token", timeout, func(ctx context.Context, op *simOp) simOpResult {
		tok, err := inc.source(key).TokenContext(ctx)
		return simOpResult{tok: tok, err: err}
	})
	w.logf("op%d token %s/%s timeout=%v", op.id, inc.name, key, timeout)
}

func (w *simWorld) opAPI(inc *simInc, key string, timeout time.Duration) {
	op := w.startOp(inc, key, "api", timeout, func(ctx context.Context, op *simOp) simOpResult {
		req, err := http.NewRequestWithContext(WithGrant(ctx, key), http.MethodGet, "https://api.pandadoc.com/public/v1/documents", nil)
		if err != nil {
			return simOpResult{err: err}
		}
		resp, err := inc.transport(key).RoundTrip(req)
		if err != nil {
			return simOpResult{err: err}
		}
		resp.Body.Close()
		return simOpResult{status: resp.StatusCode}
	})
	w.logf("op%d api %s/%s timeout=%v", op.id, inc.name, key, timeout)
}

// invalidate tells a process that the API rejected the last token one
// of its callers got.
func (w *simWorld) invalidate() {
	inc := w.reps[w.rnd.IntN(len(w.reps))]
	key := w.keys[w.rnd.IntN(len(w.keys))]
	w.mu.Lock()
	tok := inc.lastTok[key]
	if tok != nil {
		g := w.srv.grants[key]
		g.forcedRT[g.atRT[atIndex(tok)]] = true
	}
	w.mu.Unlock()
	if tok == nil {
		w.logf("invalidate %s/%s: no token yet", inc.name, key)
		return
	}
	ok := inc.source(key).Invalidate(tok)
	w.logf("invalidate %s/%s at%d: %v", inc.name, key, atIndex(tok), ok)
}

// storm makes the API reject every access token of a grant issued so
// far, and sends it requests from several processes at once.
func (w *simWorld) storm() {
	key := w.keys[w.rnd.IntN(len(w.keys))]
	w.mu.Lock()
	g := w.srv.grants[key]
	g.rejectAT = g.atSeq + 1
	w.mu.Unlock()
	n := 2 + w.rnd.IntN(4)
	w.logf("storm %s: the API rejects its tokens up to at%d; %d requests", key, g.rejectAT-1, n)
	// One at a time: callers started together would race to the
	// rejection, and who meets it first would depend on the scheduler.
	for i := range n {
		if i > 0 && !w.settle() {
			return
		}
		w.opAPI(w.reps[w.rnd.IntN(len(w.reps))], key, time.Duration(w.rnd.oneOf(10, 60))*time.Second)
	}
}

// crash kills the process inc at whatever point its goroutines are
// parked: a Save under way may or may not have been written. The
// replica restarts at once, from the Store.
func (w *simWorld) crash(inc *simInc) {
	w.kill(inc)
	w.reps[inc.rep] = w.newInc(inc.rep, inc.gen+1)
}

// kill ends the process inc.
func (w *simWorld) kill(inc *simInc) {
	w.mu.Lock()
	w.stats.crashes++
	inc.dead.Store(true)
	inc.deadMono.Store(w.mono.Load())
	w.logf("crash %s", inc.name)
	for _, p := range w.sortedParkedLocked() {
		if p.inc != inc {
			continue
		}
		if s := p.inc.sess[p.key]; p.kind == "save" && (s == nil || !s.lost) && w.rnd.IntN(2) == 0 {
			// (The Store refuses a Save under a lost lock.)
			w.applySaveLocked(p)
			w.logf("  its save of rt%d/at%d of %s was written", rtIndex(p.tok), atIndex(p.tok), p.key)
		}
		w.answerLocked(p, simReply{err: errSimDead})
	}
	var mine []*simTimer
	for _, t := range w.timers {
		if t.inc == inc {
			mine = append(mine, t)
		}
	}
	for _, t := range mine {
		if t.detached {
			// A crashed process's Save retry never comes.
			for i, o := range w.timers {
				if o == t {
					w.timers = append(w.timers[:i], w.timers[i+1:]...)
					break
				}
			}
			w.deadTimers = append(w.deadTimers, t)
			continue
		}
		w.fireLocked(t)
	}
	for _, key := range w.keys {
		st := w.st[key]
		if s := st.holder; s != nil && s.inc == inc {
			if w.cfg.lease {
				s.orphan = true // the lease outlives the process
			} else {
				st.holder = nil // the lock dies with the session
			}
		}
	}
	var ops []*simOp
	for _, op := range w.ops {
		if op.inc == inc && op.state != opDone {
			w.wakeLocked(op)
			ops = append(ops, op)
		}
	}
	w.mu.Unlock()
	w.cancelOps(ops)
}

// rollback puts an older token back in the Store, as a Redis restarted
// from its last snapshot, or a failover to a lagging replica, does.
func (w *simWorld) rollback() {
	key := w.keys[w.rnd.IntN(len(w.keys))]
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.st[key]
	var older []*oauth2.Token
	for _, t := range st.history {
		if rtIndex(t) < rtIndex(st.tok) || rtIndex(t) == rtIndex(st.tok) && atIndex(t) < atIndex(st.tok) {
			older = append(older, t)
		}
	}
	if len(older) == 0 {
		w.logf("rollback %s: nothing older", key)
		return
	}
	// Mostly to the token saved before the current one (a snapshot
	// taken shortly before), sometimes further back.
	t := older[len(older)-1]
	if w.rnd.IntN(5) == 0 {
		t = older[w.rnd.IntN(len(older))]
	}
	w.logf("rollback %s: rt%d/at%d -> rt%d/at%d", key, rtIndex(st.tok), atIndex(st.tok), rtIndex(t), atIndex(t))
	st.tok = simCopy(t)
	st.history = append(st.history, simCopy(t))
	st.rolledBack = true
	w.stats.rollbacks++
}

// killLock ends the session holding a grant's lock: its holder loses it
// without knowing, until the Store tells it.
func (w *simWorld) killLock() {
	w.mu.Lock()
	defer w.mu.Unlock()
	var held []string
	for _, key := range w.keys {
		if s := w.st[key].holder; s != nil && !s.orphan {
			held = append(held, key)
		}
	}
	if len(held) == 0 {
		w.logf("kill-lock: no lock held")
		return
	}
	key := held[w.rnd.IntN(len(held))]
	st := w.st[key]
	st.holder.lost = true
	w.exposeLocked(st.holder)
	w.logf("kill-lock %s: %s loses it", key, st.holder.inc.name)
	st.holder = nil
	st.lockFaulted = true
	w.stats.lockKills++
}

// drain ends the schedule: no new callers or faults past a few steps,
// every caller and flight finishes, then each process's Wait for each of
// its grants in turn, and Grants.Wait; then the end of the world is
// checked (e).
func (w *simWorld) drain() {
	w.mu.Lock()
	w.draining = true
	w.drainFaults = 30
	w.logf("drain")
	w.mu.Unlock()
	done := func() bool {
		for _, op := range w.ops {
			if op.state != opDone {
				return false
			}
		}
		for _, key := range w.keys {
			if s := w.st[key].holder; s != nil && s.orphan {
				return false // a crashed process's lease: let it end before the Waits
			}
		}
		return w.flightsAlive == 0
	}
	if !w.driveUntil(done, 2000) || !w.waitAll(5) {
		w.finish()
		return
	}
	for _, inc := range w.incs {
		unsaved := false
		for _, key := range w.sourceKeys(inc) {
			if tok, ok := simServed(inc.source(key)); ok {
				unsaved = true
				// (A revoked grant's token is worth nothing saved, a
				// Save that failed may have been written after all, and
				// what matters is its refresh token.)
				w.mu.Lock()
				revoked := w.srv.grants[key].revoked
				stored := rtIndex(w.st[key].tok) >= rtIndex(tok)
				w.mu.Unlock()
				if !inc.dead.Load() && !revoked && !stored {
					w.mu.Lock()
					w.violate("after Wait, %s/%s still serves a token whose Save failed", inc.name, key)
					w.mu.Unlock()
				}
			}
		}
		if !unsaved {
			// Nothing left to save: Grants.Wait has only the OnRevoked
			// calls to wait for.
			inc.grants.Wait()
		}
	}
	unsaved := map[simSrc]bool{}
	for _, inc := range w.incs {
		for _, key := range w.sourceKeys(inc) {
			if simUnsaved(inc.source(key)) {
				unsaved[simSrc{inc, key}] = true
			}
		}
	}
	w.mu.Lock()
	w.checkEndLocked(unsaved)
	w.flushNotesLocked()
	w.mu.Unlock()
	w.finish()
}

// waitAll runs Wait for each source with work left, one at a time: all
// sources of the processes alive, the unsaved ones of the crashed (whose
// Save retries Wait ends). Faults go on for the first steps of each. It
// reports false if a Wait does not end.
func (w *simWorld) waitAll(faults int) bool {
	for _, inc := range w.incs {
		for _, key := range w.sourceKeys(inc) {
			if inc.dead.Load() && !simUnsaved(inc.source(key)) {
				continue // a crashed process has nothing to finish but its Save retries
			}
			w.mu.Lock()
			w.drainFaults = faults
			w.mu.Unlock()
			ts := inc.source(key)
			op := w.startOp(inc, key, "wait", 0, func(ctx context.Context, op *simOp) simOpResult {
				ts.Wait()
				return simOpResult{}
			})
			w.logf("op%d wait %s/%s", op.id, inc.name, key)
			if !w.driveUntil(func() bool { return op.state == opDone && w.flightsAlive == 0 }, 2000) {
				return false
			}
		}
	}
	return true
}

// finish ends the schedule: every process crashes, and the Save
// retries that a process keeps while a token is unsaved (which a real
// process's exit would end) run once more against a Store that accepts
// them, so that no goroutine or timer is left behind.
func (w *simWorld) finish() {
	w.logf("finish")
	for _, inc := range w.reps {
		if !inc.dead.Load() {
			w.kill(inc)
		}
	}
	for _, inc := range w.incs {
		inc.zombie.Store(true)
	}
	for i := 0; w.settle(); i++ {
		w.mu.Lock()
		if len(w.deadTimers) == 0 || i > 1000 {
			w.mu.Unlock()
			break
		}
		t := w.deadTimers[0]
		w.deadTimers = w.deadTimers[1:]
		w.timers = append(w.timers, t)
		w.fireLocked(t)
		w.mu.Unlock()
	}
	for _, inc := range w.incs {
		inc.grants.Wait() // the OnRevoked calls
	}
	w.settle()
}

// sourceKeys returns the grants inc has a source for, sorted.
func (w *simWorld) sourceKeys(inc *simInc) []string {
	var keys []string
	inc.grants.Range(func(key string, _ *TokenSource) bool {
		keys = append(keys, key)
		return true
	})
	for key := range inc.singles {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

// driveUntil answers parked calls and moves time on until cond holds (it
// is called at quiescence, with w.mu held). It reports false, with a
// violation, if the world is stuck or cond does not come within limit
// steps.
func (w *simWorld) driveUntil(cond func() bool, limit int) bool {
	for i := 0; ; i++ {
		if !w.settle() {
			return false
		}
		w.mu.Lock()
		if cond() {
			w.mu.Unlock()
			return true
		}
		if i >= limit {
			busiest, most := simSrc{}, 0
			for src, n := range w.drainStarts {
				if n > most || n == most && src.inc.name+src.key < busiest.inc.name+busiest.key {
					busiest, most = src, n
				}
			}
			detail := ""
			if most > 0 {
				detail = fmt.Sprintf(": %s/%s started %d flights while draining", busiest.inc.name, busiest.key, most)
			}
			w.violate("no progress after %d steps of draining%s", limit, detail)
			w.flushNotesLocked()
			w.mu.Unlock()
			return false
		}
		w.stats.steps++
		if w.drainFaults > 0 {
			w.drainFaults--
		}
		w.mu.Unlock()
		if w.fireDue() {
			continue
		}
		w.mu.Lock()
		ps, pws := w.releasableLocked()
		if len(ps) > 0 {
			p := ps[w.rnd.pick(pws)]
			w.mu.Unlock()
			w.answer(p)
			continue
		}
		// Nothing to answer: move time to the next thing that can
		// happen.
		now := time.Duration(w.mono.Load())
		next := now + time.Second
		first := true
		consider := func(at time.Duration) {
			if at > now && (first || at < next) {
				next, first = at, false
			}
		}
		for _, t := range w.timers {
			consider(t.at)
		}
		for _, p := range w.parked {
			if p.hung != 0 {
				consider(p.hung)
			}
		}
		for _, key := range w.keys {
			if s := w.st[key].holder; s != nil && w.cfg.lease {
				consider(s.lease)
			}
		}
		for _, op := range w.ops {
			if op.state != opDone && op.deadline != 0 {
				consider(op.deadline)
			}
		}
		w.mu.Unlock()
		w.advance(max(next-now, time.Second))
	}
}
