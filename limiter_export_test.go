package pandadocauth

// Test-only access for the external test package's Limiter tests.

import "time"

// FakeClock is the tests' fake clock.
type FakeClock = fakeClock

// NewFakeClock returns a fake clock that moves only when advanced.
func NewFakeClock() *FakeClock { return newFakeClock() }

// SetLimiterClock makes l read time from c.
func SetLimiterClock(l *Limiter, c *FakeClock) { l.clk = &clockRef{c} }

// Pending returns how many timers c has pending.
func (c *fakeClock) Pending() int { return c.pending() }

// NextDue returns when c's earliest pending timer is due, as a Mono
// reading.
func (c *fakeClock) NextDue() (time.Duration, bool) { return c.nextDue() }
