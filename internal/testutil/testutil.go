// Package testutil holds the helpers that the module's tests share: a
// goroutine-safe log buffer that signals its writes, a test logger, a
// secret-absence assertion, and waits on channels with a watchdog.
//
// The waits here never poll and never assert how long something takes.
// Their watchdog only turns a hang into a test failure with a message;
// it is long enough that a slow or overloaded machine never reaches it.
package testutil

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Watchdog bounds every wait of this package: a wait that lasts longer
// fails the test, since what it waits for is not coming.
const Watchdog = 2 * time.Minute

// Recv returns the next value from ch, or the zero value once ch is
// closed. If neither happens within Watchdog, it fails the test, naming
// what it waited for.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(Watchdog)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("still waiting for %s after %v", what, Watchdog)
		panic("unreachable")
	}
}

// Context returns a context that ends when the test ends or after
// Watchdog, for the waits that take one (such as pandadoctest's
// WaitTokenRequests).
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Watchdog)
	t.Cleanup(cancel)
	return ctx
}

// AssertNoSecret fails the test if s, described by what, contains any of
// secrets. Empty secrets are ignored.
func AssertNoSecret(t testing.TB, what, s string, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("%s leaks a secret (%s…): %s", what, secret[:min(len(secret), 6)], s)
		}
	}
}

// A Buffer is a bytes.Buffer that is safe for concurrent use, for the
// output of a command or a logger that a test reads while it is being
// written. Its waits are woken by writes, not by polling. The zero value
// is an empty buffer ready to use.
type Buffer struct {
	mu      sync.Mutex // guards b and changed
	b       bytes.Buffer
	changed chan struct{} // closed and replaced by each Write; nil until a wait needs it
}

// Write appends p to the buffer and wakes the waits up.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return n, err
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// WaitFor waits until cond holds for the buffer's contents and returns
// them. It fails the test after Watchdog.
func (b *Buffer) WaitFor(t testing.TB, what string, cond func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(Watchdog)
	defer timer.Stop()
	for {
		b.mu.Lock()
		s := b.b.String()
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		if cond(s) {
			return s
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("still waiting for %s after %v; the buffer holds:\n%s", what, Watchdog, s)
		}
	}
}

// WaitLine waits until a line of the buffer, trimmed of spaces, starts
// with prefix, and returns that line trimmed. It fails the test after
// Watchdog.
func (b *Buffer) WaitLine(t testing.TB, prefix string) string {
	t.Helper()
	var line string
	b.WaitFor(t, "a line starting with "+prefix, func(s string) bool {
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// NewLogger returns a logger that writes text records of every level,
// Debug and up, to the returned Buffer.
func NewLogger() (*slog.Logger, *Buffer) {
	buf := &Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
