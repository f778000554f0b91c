package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

// Secrets used by the tests; none may appear in an error or a log line.
const (
	testClientID     = "client-id-1"
	testClientSecret = "cs-SECRET-5f2a"
	testRefresh      = "rt-SECRET-0"
	testAccess       = "at-SECRET-0"
)

// tokenCall is the httpmock call-count key of the token endpoint.
const tokenCall = "POST " + TokenURL

// apiURL is an API route used by transport tests.
const apiURL = "https://api.pandadoc.com/public/v1/documents"

// fakeClock is the clock of the tests: time moves only when a test
// advances it, or, when auto is set, when a timer is started (time then
// jumps to the timer's end, so retries and back-offs take no real time
// but are measured in fake time).
type fakeClock struct {
	mu     sync.Mutex // guards the fields below
	cond   *sync.Cond // signalled when a timer starts
	t      time.Time
	mono   time.Duration
	auto   bool
	timers []*fakeTimer
	waits  []time.Duration // every timer's duration, in order
}

type fakeTimer struct {
	at time.Duration
	c  chan time.Time
}

func newFakeClock() *fakeClock {
	c := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), mono: time.Hour}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// newAutoClock returns a fakeClock whose timers fire at once, moving
// time to their end.
func newAutoClock() *fakeClock {
	c := newFakeClock()
	c.auto = true
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *fakeClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{at: c.mono + d, c: make(chan time.Time, 1)}
	c.waits = append(c.waits, d)
	c.timers = append(c.timers, tm)
	if c.auto {
		c.advanceLocked(max(d, 0))
	}
	c.cond.Broadcast()
	stop := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, o := range c.timers {
			if o == tm {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
	return tm.c, stop
}

// Advance moves the clock by d and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.advanceLocked(d)
	c.mu.Unlock()
}

func (c *fakeClock) advanceLocked(d time.Duration) {
	c.t = c.t.Add(d)
	c.mono += d
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at <= c.mono {
			tm.c <- c.t
		} else {
			kept = append(kept, tm)
		}
	}
	c.timers = kept
}

// newPumpedClock returns a fakeClock that a goroutine moves, whenever a
// timer is pending, to the earliest timer's end: timers fire in the order
// of their ends, taking no real time, as if time ran only while
// everything else waits. It stops when the test ends.
func newPumpedClock(t *testing.T) *fakeClock {
	c := newFakeClock()
	stop := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.mu.Lock()
		defer c.mu.Unlock()
		for {
			for len(c.timers) == 0 && !stop {
				c.cond.Wait()
			}
			if stop {
				return
			}
			next := c.timers[0].at
			for _, tm := range c.timers {
				next = min(next, tm.at)
			}
			c.advanceLocked(max(next-c.mono, 0))
		}
	}()
	t.Cleanup(func() {
		c.mu.Lock()
		stop = true
		c.cond.Broadcast()
		c.mu.Unlock()
		<-done
	})
	return c
}

// Manual stops firing timers at once: from now on they fire only when
// the test advances the clock. A test whose Save keeps failing needs it,
// or the Save-retry timer would run fake time away.
func (c *fakeClock) Manual() {
	c.mu.Lock()
	c.auto = false
	c.mu.Unlock()
}

// WaitTimers blocks until n timers are pending.
func (c *fakeClock) WaitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		c.cond.Wait()
	}
}

// Waits returns the durations of the timers started so far.
func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// testConfig returns a Config whose token calls go to mt.
func testConfig(mt *httpmock.MockTransport) *Config {
	return &Config{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		HTTPClient:   &http.Client{Transport: mt},
	}
}

// newTokenServer returns the token endpoint of the tests, the fake
// PandaDoc's engine that pandadoctest serves, closed when the test ends:
// it accepts the test client, holds one grant whose refresh token is
// testRefresh, rotates refresh tokens and names its tokens in order,
// at-SECRET-1 with rt-SECRET-1, at-SECRET-2 with rt-SECRET-2, … (a grant
// added as "k" gets at-SECRET-k-1, …). expiresIn is the lifetime it
// announces, 0 for none known. opts adjust its Options.
func newTokenServer(t *testing.T, expiresIn int, opts ...func(*fakepandadoc.Options)) *fakepandadoc.Server {
	t.Helper()
	srv := newGrantlessServer(t, expiresIn, opts...)
	srv.AddGrant("", testRefresh, 0)
	return srv
}

// newGrantlessServer is newTokenServer without its grant.
func newGrantlessServer(t *testing.T, expiresIn int, opts ...func(*fakepandadoc.Options)) *fakepandadoc.Server {
	t.Helper()
	o := fakepandadoc.Options{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		ExpiresIn:    expiresIn,
		Rotation:     true,
		TokenName:    testTokenName,
	}
	for _, opt := range opts {
		opt(&o)
	}
	srv := fakepandadoc.New(o)
	t.Cleanup(srv.Close)
	return srv
}

// testTokenName names the tokens of newTokenServer.
func testTokenName(kind fakepandadoc.TokenKind, grant string, n int) string {
	if grant == "" {
		return fmt.Sprintf("%s-SECRET-%d", kind, n)
	}
	return fmt.Sprintf("%s-SECRET-%s-%d", kind, grant, n)
}

// keepRefreshToken makes a newTokenServer keep refresh tokens and leave
// them out of its answers.
func keepRefreshToken(o *fakepandadoc.Options) {
	o.Rotation = false
	o.OmitRefreshToken = true
}

// waitPosts blocks until srv has received n token POSTs.
func waitPosts(t *testing.T, srv *fakepandadoc.Server, n int) {
	t.Helper()
	if err := srv.WaitTokenRequests(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

// postForm returns the form of srv's i-th token POST (from 0), each
// parameter's first value, with its Authorization, Content-Type and
// Accept headers as "#authorization", "#content-type" and "#accept".
func postForm(srv *fakepandadoc.Server, i int) map[string]string {
	p := srv.TokenPost(i)
	form := map[string]string{}
	for k := range p.Form {
		form[k] = p.Form.Get(k)
	}
	form["#authorization"] = p.Header.Get("Authorization")
	form["#content-type"] = p.Header.Get("Content-Type")
	form["#accept"] = p.Header.Get("Accept")
	return form
}

// newSource returns a TokenSource on a fake clock whose initial token
// expires in expiresIn (0: no expiry), with the token endpoint answering
// through srv (none if nil).
func newSource(t *testing.T, srv *fakepandadoc.Server, expiresIn time.Duration) (*TokenSource, *httpmock.MockTransport, *fakeClock) {
	t.Helper()
	mt := httpmock.NewMockTransport()
	if srv != nil {
		mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	}
	clock := newAutoClock()
	initial := &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, TokenType: "Bearer"}
	if expiresIn != 0 {
		initial.Expiry = clock.Now().Add(expiresIn)
		initial.ExpiresIn = int64(expiresIn / time.Second)
	}
	ts := &TokenSource{Config: testConfig(mt), Initial: initial, clk: &clockRef{clock}}
	t.Cleanup(ts.Wait)
	return ts, mt, clock
}

// memStore is an in-memory Store that records its calls and can fail.
type memStore struct {
	mu       sync.Mutex // guards all fields
	tok      *oauth2.Token
	saves    []*oauth2.Token
	loads    int
	saveErrs int // the next saveErrs Saves fail
	loadErr  error
	onSave   func(*oauth2.Token)
}

func (m *memStore) Load(ctx context.Context) (*oauth2.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads++
	if m.loadErr != nil {
		return nil, m.loadErr
	}
	if m.tok == nil {
		return nil, nil
	}
	t := *m.tok
	return &t, nil
}

func (m *memStore) Save(ctx context.Context, t *oauth2.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.onSave != nil {
		m.onSave(t)
	}
	m.saves = append(m.saves, t)
	if m.saveErrs > 0 {
		m.saveErrs--
		return errors.New("disk full")
	}
	c := *t
	m.tok = &c
	return nil
}

func (m *memStore) stored() *oauth2.Token {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tok
}

func (m *memStore) saveCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.saves)
}

// syncBuffer is the log buffer of the module's tests.
type syncBuffer = testutil.Buffer

// newTestLogger returns a logger of every level into a syncBuffer.
func newTestLogger() (*slog.Logger, *syncBuffer) { return testutil.NewLogger() }

// testSecrets are the secrets of this package's tests, by prefix.
var testSecrets = []string{testClientSecret, "rt-SECRET", "at-SECRET", "code-SECRET", "key-SECRET"}

// assertNoSecret fails if s contains any test secret.
func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	testutil.AssertNoSecret(t, what, s, testSecrets...)
}

// settle waits for the flight under way, if any, to land. Unlike Wait it
// does not retry a failed Save.
func settle(ts *TokenSource) {
	r := &ts.flight
	r.mu.Lock()
	if r.call == nil {
		r.mu.Unlock()
		return
	}
	c := r.call
	r.mu.Unlock()
	<-c.done
}
