package pandadocauth

import (
	"context"
	"sort"
	"sync"
	"time"
)

// LimitStore keeps a Limiter's sliding logs: per (key, class), the send
// times of the requests of the last window, the slots reserved by those
// waiting included, a cooldown after a 429, and the limit a 429 taught.
// The Limiter keeps them in its process unless its Store is set;
// redisstore.Limits shares them across the replicas of a fleet.
//
// A request costs one call: Reserve, which also reports what became of
// the request's previous attempt, if any. Report is for an outcome with
// no attempt after it: a 429 not retried, a slot given back.
//
// Implementations must be safe for concurrent use, and must implement the
// semantics below, which the in-process store follows: a Limiter cannot
// tell them apart but by where the state lives.
type LimitStore interface {
	// Reserve applies op.Reported, if set, then takes the first free slot
	// of (op.Key, op.Class) at or after now+op.After: the earliest time
	// that is not before the cooldown, nor before any slot already taken
	// (first come, first served), and at which fewer than the limit slots
	// lie in the op.Window before it. The limit is op.Limit, or the one a
	// 429 taught, if lower (see LimitReport). If the slot is more than
	// op.MaxWait from now, no slot is taken: the answer has OK false and
	// the Wait it would have had.
	Reserve(ctx context.Context, op LimitOp) (LimitSlot, error)

	// Report applies op.Reported without taking a slot.
	Report(ctx context.Context, op LimitOp) error
}

// LimitOp is one operation of a LimitStore on the log of one (Key,
// Class).
type LimitOp struct {
	Key   string // the PandaDoc user the request counts against
	Class Class

	// Limit is the requests allowed per Window; 0 or less means no limit.
	// A log is kept either way: a 429 learns from it.
	Limit int

	// Window is the client-side window: Limiter.Window plus its Margin.
	// Slots older than Window count no more.
	Window time.Duration

	// After puts the slot no earlier than now+After (a back-off before a
	// retry). Reserve only.
	After time.Duration

	// MaxWait is the longest wait the request accepts: a slot further
	// from now is not taken. Reserve only.
	MaxWait time.Duration

	// Reported is what became of an earlier slot of this (Key, Class);
	// its zero value reports nothing.
	Reported LimitReport
}

// LimitReport is the outcome of a slot that a LimitStore must know about.
// A request sent and answered other than 429 needs no report: its slot
// stays in the log, because PandaDoc counted it.
type LimitReport struct {
	// Slot is LimitSlot.ID of the slot reported.
	Slot uint64

	// Outcome is what became of it; SlotNone reports nothing.
	Outcome SlotOutcome

	// Hint is, with SlotThrottled, how long from now PandaDoc asked to
	// wait: every slot of the (Key, Class) is held back until then. It
	// is at most the Window.
	Hint time.Duration
}

// SlotOutcome is what became of a slot.
type SlotOutcome uint8

// The outcomes of a LimitReport.
const (
	// SlotNone reports nothing.
	SlotNone SlotOutcome = iota

	// SlotUnused: the request was not sent (its context ended while it
	// waited, or it provably never reached PandaDoc). The slot is
	// removed from the log.
	SlotUnused

	// SlotThrottled: PandaDoc answered 429. PandaDoc does not count a
	// throttled request, so the slot is removed from the log; no slot
	// is given before now+Hint; and the limit drops to the slots of the
	// last Window that remain in the log (the requests PandaDoc
	// accepted), at least 1, then climbs back by a tenth of Limit
	// (at least 1) for each Window without a 429. Without a Limit, the
	// learned limit climbs by a tenth of itself and is lifted after ten
	// such windows.
	SlotThrottled
)

// LimitSlot is the answer of LimitStore.Reserve.
type LimitSlot struct {
	// OK reports whether the slot was taken: false when it lies more
	// than MaxWait from now.
	OK bool

	// Wait is how long from now until the slot.
	Wait time.Duration

	// ID identifies the slot in a LimitReport.
	ID uint64
}

// localLimits keeps the logs of a Limiter without Store (or whose Store
// fails) in this process, with LimitStore's semantics, on the Limiter's
// clock. Its zero value is ready to use.
//
// Memory follows traffic: a bucket holds the slots of the last window,
// and one idle for a window (its log empty, no cooldown, no learned
// limit) is dropped by the first reservation after it, which sweeps the
// whole table once per window. No goroutine or timer runs for it.
type localLimits struct {
	mu        sync.Mutex // guards the fields below
	m         map[string]*userBuckets
	nextSweep time.Duration // a Mono reading: the next reservation after it sweeps m
	lastKey   string        // the key of the last reservation, whose buckets are last
	last      *userBuckets  // nil once swept
}

// userBuckets are the buckets of one key, by class; nil for none.
type userBuckets [numClasses]*bucket

// bucket is the state of one (key, class). Times are Mono readings of
// the clock.
type bucket struct {
	log       slotLog       // slot times, ascending; the oldest may have expired
	block     time.Duration // no slot before it: the cooldown of a 429
	learned   int           // the limit the last 429 taught; 0: none
	learnedAt time.Duration // when it was taught
}

// reserve is LimitStore.Reserve at now.
func (s *localLimits) reserve(now time.Duration, op *LimitOp) LimitSlot {
	s.mu.Lock()
	if now >= s.nextSweep {
		s.sweep(now, op.Window)
	}
	u := s.last
	if u == nil || s.lastKey != op.Key {
		if u = s.m[op.Key]; u == nil {
			if s.m == nil {
				s.m = make(map[string]*userBuckets)
			}
			u = new(userBuckets)
			s.m[op.Key] = u
		}
		s.last, s.lastKey = u, op.Key
	}
	c := op.Class
	if c >= numClasses {
		c %= numClasses
	}
	b := u[c]
	if b == nil {
		b = new(bucket)
		u[c] = b
	}
	if op.Reported.Outcome != SlotNone {
		b.apply(now, op)
	}
	b.log.trim(now - op.Window)
	slot := b.next(now+max(op.After, 0), b.limit(now, op), op.Window)
	wait := slot - now
	if wait > op.MaxWait {
		s.mu.Unlock()
		return LimitSlot{Wait: wait}
	}
	b.log.push(slot)
	s.mu.Unlock()
	return LimitSlot{OK: true, Wait: wait, ID: uint64(slot)}
}

// report is LimitStore.Report at now.
func (s *localLimits) report(now time.Duration, op *LimitOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.m[op.Key]; u != nil {
		if b := u[op.Class%numClasses]; b != nil {
			b.apply(now, op)
		}
	}
}

// sweep drops the buckets idle at now, and lets the map go when most of
// it was dropped (a Go map never shrinks). s.mu must be held.
func (s *localLimits) sweep(now, window time.Duration) {
	s.nextSweep = now + window
	s.last, s.lastKey = nil, ""
	dropped := 0
	for k, u := range s.m {
		empty := true
		for c, b := range u {
			switch {
			case b == nil:
			case b.idle(now, window):
				u[c] = nil
			default:
				empty = false
			}
		}
		if empty {
			delete(s.m, k)
			dropped++
		}
	}
	switch {
	case len(s.m) == 0:
		s.m = nil
	case dropped > len(s.m):
		m := make(map[string]*userBuckets, len(s.m))
		for k, u := range s.m {
			m[k] = u
		}
		s.m = m
	}
}

// apply applies op.Reported to b at now.
func (b *bucket) apply(now time.Duration, op *LimitOp) {
	r := op.Reported
	if r.Outcome == SlotNone {
		return
	}
	slot := time.Duration(r.Slot)
	if i := b.log.search(slot); i < b.log.n && b.log.at(i) == slot {
		b.log.remove(i)
	}
	if r.Outcome != SlotThrottled {
		return
	}
	b.block = max(b.block, now+min(max(r.Hint, 0), op.Window))
	accepted := b.log.search(now+1) - b.log.search(now-op.Window+1)
	b.learned, b.learnedAt = max(accepted, 1), now
}

// limit returns the limit of b at now: op.Limit, or what a 429 taught,
// climbing back; 0 means none.
func (b *bucket) limit(now time.Duration, op *LimitOp) int {
	if b.learned == 0 {
		return max(op.Limit, 0)
	}
	return b.learnedLimit(now, op)
}

// learnedLimit is limit when a 429 taught one; apart, so that limit
// is inlined.
func (b *bucket) learnedLimit(now time.Duration, op *LimitOp) int {
	conf := max(op.Limit, 0)
	l, done := learnedLimit(b.learned, conf, int((now-b.learnedAt)/op.Window))
	if done {
		b.learned = 0
		return conf
	}
	return l
}

// learnedLimit is the limit learned as base, of a class whose configured
// limit is conf (0: none), after clean windows without a 429, and
// whether it has climbed back all the way, which it always has after ten.
// redisstore's script computes the same.
func learnedLimit(base, conf, clean int) (int, bool) {
	step, top := (conf+9)/10, conf
	if conf == 0 {
		step = (base + 9) / 10
		top = base + 10*step
	}
	l := base + clean*step
	if l >= top {
		return conf, true
	}
	return l, false
}

// next returns the first free slot at or after from, under limit (0:
// none) per window.
func (b *bucket) next(from time.Duration, limit int, window time.Duration) time.Duration {
	slot := max(from, b.block)
	n := b.log.n
	if n > 0 {
		slot = max(slot, b.log.at(n-1))
	}
	if limit > 0 && n >= limit {
		slot = max(slot, b.log.at(n-limit)+window)
	}
	return slot
}

// idle reports whether b holds nothing that matters at now: no slot in
// the window, no cooldown, no learned limit still climbing back.
func (b *bucket) idle(now, window time.Duration) bool {
	if b.block > now {
		return false
	}
	if n := b.log.n; n > 0 && b.log.at(n-1)+window > now {
		return false
	}
	return b.learned == 0 || now-b.learnedAt >= 10*window
}

// slotLog is a ring of slot times in ascending order, which grows by
// doubling, so that a steady flow of requests reuses its memory; it goes
// with its bucket, a window after the last slot.
type slotLog struct {
	buf  []time.Duration // len(buf) is 0 or a power of two
	head int             // index in buf of the oldest slot
	n    int             // slots held
}

// at returns the i-th oldest slot.
func (l *slotLog) at(i int) time.Duration { return l.buf[(l.head+i)&(len(l.buf)-1)] }

func (l *slotLog) set(i int, t time.Duration) { l.buf[(l.head+i)&(len(l.buf)-1)] = t }

// push appends t, not older than any slot held.
func (l *slotLog) push(t time.Duration) {
	if l.n == len(l.buf) {
		buf := make([]time.Duration, max(4, 2*len(l.buf)))
		for i := range l.n {
			buf[i] = l.at(i)
		}
		l.buf, l.head = buf, 0
	}
	l.set(l.n, t)
	l.n++
}

// trim drops the slots not after oldest.
func (l *slotLog) trim(oldest time.Duration) {
	for l.n > 0 && l.buf[l.head] <= oldest {
		l.head = (l.head + 1) & (len(l.buf) - 1)
		l.n--
	}
}

// search returns the index of the first slot not before t.
func (l *slotLog) search(t time.Duration) int {
	return sort.Search(l.n, func(i int) bool { return l.at(i) >= t })
}

// remove drops the i-th oldest slot.
func (l *slotLog) remove(i int) {
	for j := i; j < l.n-1; j++ {
		l.set(j, l.at(j+1))
	}
	l.n--
}
