package pandadocauth

import "time"

// clock is the one source of time of a TokenSource: the wall clock for
// token expiries, a monotonic reading for deadlines, and timers for the
// waits between attempts. Tests inject a fake one, so that back-offs,
// Retry-After and Save retries run in fake time.
type clock interface {
	// Now reads the wall clock.
	Now() time.Time
	// Mono reads a monotonic clock as a duration since a fixed origin.
	Mono() time.Duration
	// NewTimer returns a channel that receives once d has passed, and a
	// function that stops the timer.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// monoBase anchors the real clock's monotonic readings.
var monoBase = time.Now()

// realClock is the clock used when none is injected.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Mono reads only the monotonic clock: time.Since costs about half of
// time.Now, which reads the wall clock too. It is the one clock read on
// the hot path.
func (realClock) Mono() time.Duration { return time.Since(monoBase) }

func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// monoAt converts a wall-clock instant to a Mono reading of c, saturating
// instead of overflowing for instants far away.
func monoAt(c clock, t time.Time) time.Duration {
	now, d := c.Mono(), t.Sub(c.Now())
	switch {
	case d > 0 && now > maxDuration-d:
		return maxDuration
	case d < 0 && now < minDuration-d:
		return minDuration
	}
	return now + d
}

const (
	maxDuration = time.Duration(1<<63 - 1)
	minDuration = -maxDuration - 1
)
