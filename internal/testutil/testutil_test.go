package testutil

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex // guards failed
	failed []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

func TestAssertNoSecret(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	AssertNoSecret(r, "error", "pandadocauth: refresh failed", "rt-SECRET", "")
	if len(r.failed) != 0 {
		t.Errorf("clean string reported: %q", r.failed)
	}
	AssertNoSecret(r, "error", "token rt-SECRET-1 rejected", "rt-SECRET", "cs-SECRET")
	if len(r.failed) != 1 || !strings.Contains(r.failed[0], "error leaks a secret") {
		t.Errorf("failures = %q, want one for rt-SECRET", r.failed)
	}
	// The report names the secret only by its first characters.
	if strings.Contains(r.failed[0], "(rt-SECRET") {
		t.Errorf("the report repeats the whole secret: %q", r.failed[0])
	}
}

func TestRecv(t *testing.T) {
	t.Parallel()
	ch := make(chan int, 1)
	ch <- 7
	if got := Recv(t, ch, "a value"); got != 7 {
		t.Errorf("Recv = %d, want 7", got)
	}
	close(ch)
	if got := Recv(t, ch, "the close"); got != 0 {
		t.Errorf("Recv on a closed channel = %d, want 0", got)
	}
}

func TestBufferWaitLine(t *testing.T) {
	t.Parallel()
	var b Buffer
	started := make(chan struct{})
	done := make(chan string)
	go func() {
		close(started)
		done <- b.WaitLine(t, "Waiting for")
	}()
	<-started
	fmt.Fprintln(&b, "Opening the browser")
	fmt.Fprint(&b, "  Waiting for PandaDoc")
	fmt.Fprintln(&b, " to redirect")
	line := Recv(t, done, "WaitLine")
	if !strings.HasPrefix(line, "Waiting for PandaDoc") {
		t.Errorf("WaitLine = %q", line)
	}
	if got := b.String(); !strings.HasPrefix(got, "Opening the browser\n") {
		t.Errorf("String = %q", got)
	}
}

func TestBufferConcurrentWrites(t *testing.T) {
	t.Parallel()
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		}()
	}
	got := b.WaitFor(t, "800 lines", func(s string) bool { return strings.Count(s, "\n") == 800 })
	wg.Wait()
	if strings.Count(got, "\n") != 800 {
		t.Errorf("%d lines", strings.Count(got, "\n"))
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	log, buf := NewLogger()
	log.Debug("refresh", "attempt", 1)
	if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=refresh attempt=1") {
		t.Errorf("log = %q", got)
	}
}

func TestContext(t *testing.T) {
	t.Parallel()
	ctx := Context(t)
	if _, ok := ctx.Deadline(); !ok || ctx.Err() != nil {
		t.Errorf("Context: deadline %v, err %v", ok, ctx.Err())
	}
}
