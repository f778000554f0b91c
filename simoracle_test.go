package pandadocauth

// The oracle of the fleet simulation: the invariants checked as the
// driver answers calls, after every step and at the end.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// presentLocked checks a token POST as it arrives: the refresh token it
// presents, and the lock it is made under. w.mu must be held.
//
// (a) No process presents a refresh token that it or another process
// has seen rotated away. Some presentations of a rotated-away token are
// not the engine's to prevent; they are counted apart:
//   - "lost": every copy of the newer refresh tokens is gone (the
//     processes that got them crashed before a Save, or the answer was
//     lost on its way) and the Store never held one. This is the one
//     inherent window.
//   - "rollback": the Store held a newer one and rolled back, and this
//     process never saw the newer one (a process that did must remember
//     that its refresh token is spent).
//   - "lock": this process's lock was lost after its last Store call
//     (a lease that expired, a session that ended) without the Store
//     saying so, and another process refreshed meanwhile.
//
// (c) With a Locker, every POST is made holding the grant's lock, and
// while no lock of that grant is lost, no two POSTs of a grant are under
// way at once.
func (w *simWorld) presentLocked(p *simPark) {
	w.stats.posts++
	g := w.srv.grants[p.key]
	k := simIndex(p.rt)
	if g == nil || k < 0 {
		w.violate("%s presented a refresh token the server never issued", p.inc.name)
		return
	}
	sess := p.inc.sess[p.key]
	before := ""
	if p.f != nil {
		for _, j := range p.f.posted {
			if j != k {
				before = fmt.Sprintf("; this flight presented rt%d before", j)
			}
		}
	}
	switch {
	case p.f == nil:
		w.violate("%s POSTs for %s outside a flight", p.inc.name, p.key)
	case sess == nil:
		w.violate("%s POSTs for %s without holding its lock", p.f.name, p.key)
	case sess.lost && sess.reported:
		w.violate("%s POSTs for %s after the Store reported its lock lost%s", p.f.name, p.key, before)
	}
	st := w.st[p.key]
	if !st.lockFaulted {
		for _, o := range w.parked {
			if o != p && o.kind == "post" && o.key == p.key && o.f != p.f {
				w.violate("two refreshes of %s at once (%s and %s) with a working Locker", p.key, o.inc.name, p.inc.name)
			}
		}
	}
	if k >= g.live {
		if p.f != nil {
			p.f.posted = append(p.f.posted, k)
		}
		return
	}
	own := p.inc.observed[p.key]
	cur := rtIndex(st.tok)
	var holder, lockHolder *simInc
	for _, inc := range w.incs {
		if inc.dead.Load() || inc == p.inc {
			continue
		}
		if inc.clean[p.key] > k && holder == nil {
			holder = inc
		}
		if inc.observed[p.key] > k && lockHolder == nil {
			lockHolder = inc
		}
	}
	name := p.inc.name
	hint := before
	if p.f != nil {
		name = p.f.name
		if p.f.loadErr {
			hint += "; its last Load failed"
		}
		if st.rolledBack {
			hint += "; the Store rolled back"
		}
		p.f.posted = append(p.f.posted, k)
	}
	switch {
	case p.inc.rotated[p.key][k]:
		w.violate("%s presents rt%d of %s, which it saw replaced by rt%d in %s%s", name, k, p.key, own, p.inc.via[p.key], hint)
	case sess != nil && sess.lost && !sess.reported:
		w.window("lock", "%s presents rt%d of %s after its lock was lost unannounced", name, k, p.key)
	case p.inc.got[p.key] > k && st.maxHeld < p.inc.got[p.key]:
		// Its own refresh, never saved: no process can have a newer
		// token than that one, so whatever the Store holds is older.
		w.violate("%s presents rt%d of %s while it holds rt%d, its own refresh that the Store never held%s", name, k, p.key, p.inc.got[p.key], hint)
	case cur > k:
		w.violate("%s presents rt%d of %s while the Store holds rt%d%s", name, k, p.key, cur, hint)
	case st.maxHeld > k:
		w.window("rollback", "%s presents rt%d of %s: the Store rolled back from rt%d", name, k, p.key, st.maxHeld)
	case holder != nil:
		w.violate("%s presents rt%d of %s, replaced by rt%d that %s got in %s and the Store does not hold%s", name, k, p.key, holder.observed[p.key], holder.name, holder.via[p.key], hint)
	case lockHolder != nil:
		w.window("lock", "%s presents rt%d of %s: rt%d came to %s while its lock was lost", name, k, p.key, lockHolder.observed[p.key], lockHolder.name)
	default:
		w.window("lost", "%s presents rt%d of %s: every copy of rt%d was lost", name, k, p.key, g.live)
	}
}

// checkRotationLocked checks (c) when the server is about to replace
// the token issued with refresh token k: with a working Locker, a grant
// is refreshed once per expiry, so the refresh is due (the token is in
// its early-refresh window by some process's clock), or a caller needed
// that token replaced (Refresh, a 401, Invalidate), or it came without a
// usable access token. w.mu must be held.
func (w *simWorld) checkRotationLocked(p *simPark, g *simGrant, k int, now time.Duration) {
	if !w.cfg.rotate || w.st[p.key].lockFaulted || g.forcedRT[k] || p.f != nil && p.f.forced {
		return
	}
	issued, ok := g.rtIssued[k]
	if !ok {
		return
	}
	life := time.Duration(w.cfg.lifetime) * time.Second
	window := DefaultEarlyRefresh
	if w.cfg.early != 0 {
		window = w.cfg.early
	}
	if window < 0 {
		window = min(blockingSkew, life/2)
	} else if life < 2*window {
		window = life / 2
	}
	// The receiving process sets Expiry by its clock, the refreshing one
	// reads it by its own: they differ by up to twice the skew.
	slack := 2*w.cfg.skew + 2*time.Second
	if due := issued + life - window - slack; now < due {
		name := p.inc.name
		if p.f != nil {
			name = p.f.name
		}
		w.violate("%s refreshes %s %v before the token of rt%d is due, and no caller asked for it: more than one refresh per expiry", name, p.key, due-now, k)
	}
}

// applySaveLocked stores t for key, checking (b): a newer token in the
// Store is never overwritten by an older one, and a grant's Store holds
// only that grant's tokens. w.mu must be held.
func (w *simWorld) applySaveLocked(p *simPark) {
	st := w.st[p.key]
	t := p.tok
	if t == nil {
		w.violate("%s saved a nil token", p.inc.name)
		return
	}
	if simGrantOf(t.RefreshToken) != p.key || (t.AccessToken != "" && simGrantOf(t.AccessToken) != p.key) {
		w.violate("%s saved grant %s's token under grant %s", p.inc.name, simGrantOf(t.RefreshToken), p.key)
	}
	if cur := st.tok; cur != nil && (rtIndex(t) < rtIndex(cur) || rtIndex(t) == rtIndex(cur) && atIndex(t) < atIndex(cur)) {
		hint := ""
		if st.rolledBack {
			hint = "; the Store rolled back"
		}
		w.violate("%s overwrote rt%d/at%d of %s in the Store with the older rt%d/at%d%s", p.inc.name, rtIndex(cur), atIndex(cur), p.key, rtIndex(t), atIndex(t), hint)
	}
	st.tok = simCopy(t)
	st.history = append(st.history, simCopy(t))
	st.maxHeld = max(st.maxHeld, rtIndex(t))
	st.everAT[t.AccessToken] = true
	w.stats.saves++
}

// checkOpLocked checks (d) for a caller that returned: it got a valid
// token of its grant, or an error that says why, and no secret. It
// returns the outcome for the trace. w.mu must be held.
func (w *simWorld) checkOpLocked(op *simOp) string {
	res := op.res
	if res.err != nil {
		out := w.checkErrLocked(op, res.err)
		if !(op.kind == "refresh" && errors.Is(res.err, ErrNotSaved) && res.tok != nil) {
			return out
		}
		// Refresh's token whose Save failed, served all the same.
		return w.checkTokenLocked(op, res.tok, false) + " " + out
	}
	switch op.kind {
	case "token", "refresh":
		return w.checkTokenLocked(op, res.tok, op.kind == "refresh")
	case "api":
		if res.status != 200 && res.status != 401 {
			w.violate("op%d (api) got status %d", op.id, res.status)
		}
		return fmt.Sprint(res.status)
	}
	return "ok"
}

// checkTokenLocked checks a token a caller got; saved says it must have
// been saved (Refresh without error). w.mu must be held.
func (w *simWorld) checkTokenLocked(op *simOp, t *oauth2.Token, saved bool) string {
	{
		if t == nil {
			w.violate("op%d (%s) got neither a token nor an error", op.id, op.kind)
			return "nil"
		}
		g := w.srv.grants[op.key]
		n := atIndex(t)
		switch {
		case simGrantOf(t.AccessToken) != op.key:
			w.violate("op%d (%s %s) got grant %s's token", op.id, op.kind, op.key, simGrantOf(t.AccessToken))
		case g == nil || n < 0 || n > g.atSeq:
			w.violate("op%d (%s) got an access token the server never issued", op.id, op.kind)
		case !t.Expiry.IsZero() && !op.inc.clk.Now().Before(t.Expiry):
			w.violate("op%d (%s) got an expired token (at%d, expired %v ago)", op.id, op.kind, n, op.inc.clk.Now().Sub(t.Expiry))
		}
		if saved && !w.st[op.key].everAT[t.AccessToken] {
			w.violate("op%d: Refresh returned at%d of %s without error, and it was never saved", op.id, n, op.key)
		}
		op.inc.lastTok[op.key] = t
		return fmt.Sprintf("at%d", n)
	}
}

// checkErrLocked checks a caller's error and returns its class.
func (w *simWorld) checkErrLocked(op *simOp, err error) string {
	msg := err.Error()
	if strings.Contains(msg, "SECRET") {
		w.violate("op%d's error leaks a secret: %s", op.id, msg)
	}
	if !strings.HasPrefix(msg, "pandadocauth: ") {
		w.violate("op%d's error lacks the package prefix: %s", op.id, msg)
	}
	class := simErrClass(err)
	if class == "" {
		w.violate("op%d's error does not say why: %s", op.id, msg)
		class = "?"
	}
	return "err(" + class + ")"
}

// simErrClass names the cause of a caller's error, or returns "" if it
// has none the simulation knows.
func simErrClass(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "ctx"
	case errors.Is(err, ErrMalformedResponse):
		return "malformed"
	case errors.As(err, &re):
		if re.ErrorCode != "" {
			return re.ErrorCode
		}
		if re.Response != nil {
			return fmt.Sprint("http", re.Response.StatusCode)
		}
		return "endpoint"
	case errors.Is(err, ErrLockLost):
		return "lock-lost"
	case errors.Is(err, errSpent):
		return "spent"
	case errors.Is(err, errSimLockReply):
		return "lock-reply"
	case errors.Is(err, errSimStore):
		return "store"
	case errors.Is(err, errSimTimeout):
		return "timeout"
	case errors.Is(err, errSimNet):
		return "net"
	case errors.Is(err, errSimDead):
		return "dead"
	case errors.Is(err, ErrNotSaved):
		return "not-saved"
	case errors.Is(err, ErrNoToken):
		return "no-token"
	case errors.Is(err, ErrNoRefreshToken):
		return "no-refresh-token"
	}
	return ""
}

// checkDeadlinesLocked checks, after a step, that no caller whose
// deadline has passed is still waiting. w.mu must be held.
func (w *simWorld) checkDeadlinesLocked() {
	now := time.Duration(w.mono.Load())
	for _, op := range w.ops {
		if op.state != opDone && op.deadline != 0 && now >= op.deadline && !op.late {
			op.late = true
			w.violate("op%d (%s %s on %s) is still waiting %v past its deadline", op.id, op.kind, op.key, op.inc.name, now-op.deadline)
		}
	}
}

// checkEndLocked checks the world once every process has finished its
// work: nothing parked, no timer but the Save retry of a token still
// unsaved, no flight and no caller left, and the newest refresh token of
// every grant still working is in the Store. w.mu must be held.
func (w *simWorld) checkEndLocked(unsaved map[simSrc]bool) {
	for _, p := range w.parked {
		w.violate("left parked at the end: %s", p.id())
	}
	for _, t := range w.timers {
		if !t.detached || !unsaved[simSrc{t.inc, t.key}] {
			w.violate("a timer of %s is left at the end (due in %v)", t.inc.name, t.at-time.Duration(w.mono.Load()))
		}
	}
	if w.flightsAlive != 0 {
		w.violate("%d flights never ended", w.flightsAlive)
	}
	for _, op := range w.ops {
		if op.state != opDone {
			w.violate("op%d (%s) never returned", op.id, op.kind)
		}
	}
	for _, inc := range w.incs {
		// (Reported again is allowed: a different token in the Store
		// may be a new authorization, which the client cannot tell
		// from another process's token of the revoked grant.)
		for key := range inc.revokedCB {
			if !w.srv.grants[key].revoked {
				w.violate("%s's Grants reported %s revoked (OnRevoked), but the server never revoked it", inc.name, key)
			}
		}
	}
	for _, key := range w.keys {
		g := w.srv.grants[key]
		if g.revoked {
			continue
		}
		cur := rtIndex(w.st[key].tok)
		if cur == g.live {
			continue
		}
		var holder *simInc
		for _, inc := range w.incs {
			if !inc.dead.Load() && inc.observed[key] >= g.live {
				holder = inc
			}
		}
		switch {
		case w.st[key].maxHeld >= g.live:
			w.window("rollback", "at the end, the Store holds rt%d of %s: it rolled back from rt%d", cur, key, g.live)
		case holder != nil:
			hint := ""
			if w.st[key].rolledBack {
				hint = "; the Store rolled back"
			}
			w.violate("after Wait, the Store holds rt%d of %s, not the newest rt%d that %s got in %s%s", cur, key, g.live, holder.name, holder.via[key], hint)
		default:
			w.window("lost", "at the end, every copy of rt%d of %s is lost (the Store holds rt%d)", g.live, key, cur)
		}
	}
}
