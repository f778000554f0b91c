// Package fleettest is the fleet test of the stores that serialise
// refreshes across processes (pgstore, redisstore): several OS
// processes, re-executions of the store's test binary, share one
// PandaDoc grant through the store, against a token endpoint and an API
// served by the parent test. The endpoint rotates refresh tokens, as
// PandaDoc may and OAuth servers commonly do: a refresh token works once.
//
// A store's tests use it with three functions:
//
//	func TestMain(m *testing.M) {
//		if fleettest.IsWorker() {
//			os.Exit(m.Run()) // the parent test checks for leaks
//		}
//		goleak.VerifyTestMain(m)
//	}
//	func TestFleet(t *testing.T) { fleettest.Run(t, store, params) }
//	func TestFleetWithoutLocker(t *testing.T) { fleettest.RunWithoutLocker(t) }
//	func TestFleetWorker(t *testing.T) { fleettest.Worker(t, open) }
//
// The worker test must be named TestFleetWorker. Grants is the keyed
// stores' test of many grants in one fleet, in one process.
package fleettest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

const (
	// workerEnv carries a worker's configuration (JSON) to the
	// re-executed test binary.
	workerEnv = "PANDADOCAUTH_FLEET_WORKER"

	fleetWorkers    = 4
	fleetGoroutines = 3 // concurrent API callers per worker

	// fleetTTL is the tokens' lifetime (expires_in is whole seconds)
	// and fleetEarly the workers' TokenSource.EarlyRefresh: a token is
	// refreshed 600 ms before it expires.
	fleetTTL   = 2 * time.Second
	fleetEarly = 600 * time.Millisecond

	// revokeAge is how old a token is at least when the parent revokes
	// it, so that a request refused for the previous token has long had
	// its retry with this one.
	revokeAge = 250 * time.Millisecond

	// revokeSettle is how long every worker has used a token at least
	// when the parent revokes it. Zero: a token may be revoked while the
	// refresh that produced it is still finishing (saving, unlocking),
	// and a call refused then must get a newer token, not the refused
	// one again.
	revokeSettle = 0

	// workerEvent starts a line a worker prints for the parent.
	workerEvent = "fleet-event: "
)

// workerConfig is what a worker process is told.
type workerConfig struct {
	Name     string
	Locker   bool // the shared Store, else an in-memory Store of its own
	TokenURL string
	APIURL   string
	Params   map[string]string // for the store's open function
	Initial  *oauth2.Token     // the in-memory Store's first token
	Result   string            // file to write the workerResult to
}

// workerResult is what a worker reports when it stops.
type workerResult struct {
	OK       int
	Failed   int
	Failures []string // request ID and error, the first few
}

// ---- the parent's PandaDoc ----

// generation is one token the endpoint issued.
type generation struct {
	access, refresh string
	issued, expiry  time.Time
	revoked         bool
	usedBy          map[string]time.Time // worker → its first successful call with it
}

// refreshRecord is one accepted refresh.
type refreshRecord struct {
	reason string // why the replaced token needed replacing
	worker string
}

// fleetServer is the token endpoint and the API.
type fleetServer struct {
	early time.Duration // the workers' EarlyRefresh

	// mu guards everything below.
	mu           sync.Mutex
	gens         []*generation
	byAccess     map[string]int // access token → index in gens
	refreshes    []refreshRecord
	tokenPOSTs   int
	invalidGrant int
	badRequests  int
	revocations  int
	apiOK        int
	api401       int
	first401     map[string]string // request ID → token its first attempt was refused
	excused      map[string]bool   // request IDs refused twice, the second time for a token revoked since
}

func newFleetServer(early time.Duration) *fleetServer {
	return &fleetServer{early: early, byAccess: map[string]int{}, first401: map[string]string{}, excused: map[string]bool{}}
}

// issueLocked adds a generation. mu must be held.
func (s *fleetServer) issueLocked(now time.Time) *generation {
	n := len(s.gens) + 1
	g := &generation{
		access:  fmt.Sprintf("access-%d", n),
		refresh: fmt.Sprintf("refresh-%d", n),
		issued:  now,
		expiry:  now.Add(fleetTTL),
		usedBy:  map[string]time.Time{},
	}
	s.gens = append(s.gens, g)
	s.byAccess[g.access] = n - 1
	return g
}

// seed issues the first token, as a login would.
func (s *fleetServer) seed() *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.issueLocked(time.Now())
	return &oauth2.Token{AccessToken: g.access, TokenType: "Bearer", RefreshToken: g.refresh, Expiry: g.expiry}
}

func (s *fleetServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/oauth2/access_token":
		s.token(w, r)
	case "/public/v1/documents":
		s.api(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *fleetServer) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenPOSTs++
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "refresh_token" ||
		r.PostForm.Get("client_id") != "fleet-client" || r.PostForm.Get("client_secret") != "fleet-secret" {
		s.badRequests++
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_request"}`)
		return
	}
	now := time.Now()
	cur := s.gens[len(s.gens)-1]
	if r.PostForm.Get("refresh_token") != cur.refresh {
		// Rotation: only the newest refresh token works.
		s.invalidGrant++
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant","error_description":"refresh token is invalid"}`)
		return
	}
	// Why did the replaced token need replacing? A refresh of a token
	// that is neither revoked nor within the early-refresh window is a
	// duplicate: some other process had refreshed already.
	reason := "duplicate"
	switch {
	case cur.revoked:
		reason = "revoked"
	case cur.expiry.Sub(now) <= s.early+50*time.Millisecond:
		reason = "expiry"
	}
	s.refreshes = append(s.refreshes, refreshRecord{reason: reason, worker: r.Header.Get("X-Fleet-Worker")})
	g := s.issueLocked(now)
	json.NewEncoder(w).Encode(map[string]any{
		"access_token":  g.access,
		"token_type":    "Bearer",
		"refresh_token": g.refresh,
		"expires_in":    int(fleetTTL / time.Second),
	})
}

func (s *fleetServer) api(w http.ResponseWriter, r *http.Request) {
	access, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	id := r.Header.Get("X-Request-Id")
	s.mu.Lock()
	defer s.mu.Unlock()
	i, known := s.byAccess[access]
	if known && !s.gens[i].revoked && time.Now().Before(s.gens[i].expiry) {
		s.apiOK++
		if w := r.Header.Get("X-Fleet-Worker"); s.gens[i].usedBy[w].IsZero() {
			s.gens[i].usedBy[w] = time.Now()
		}
		w.Write([]byte(`{"results":[]}`))
		return
	}
	s.api401++
	if firstToken, retried := s.first401[id]; !retried {
		s.first401[id] = access
	} else if known && access != firstToken && s.gens[i].revoked {
		// The retry carried a newer token, revoked while the request was
		// on its way: a Transport retries once, so this request fails
		// through no fault of the fleet.
		s.excused[id] = true
	}
	w.WriteHeader(http.StatusUnauthorized)
}

// summary describes what the server saw.
func (s *fleetServer) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var reasons, by []string
	for _, r := range s.refreshes {
		reasons = append(reasons, r.reason)
		by = append(by, r.worker)
	}
	return fmt.Sprintf("%d tokens issued; %d token requests: refreshes for %v by %v, %d invalid_grant, %d malformed; %d revocations; API: %d ok, %d 401, %d excused",
		len(s.gens), s.tokenPOSTs, reasons, by, s.invalidGrant, s.badRequests, s.revocations, s.apiOK, s.api401, len(s.excused))
}

// drive runs the fleet test's script: whenever the current token came
// from a refresh for expiry, is at least revokeAge old and every worker
// has used it for revokeSettle, it is revoked, until rounds tokens were revoked and
// replaced, at least rounds expired, and every worker has used the last
// one.
func (s *fleetServer) drive(workers []string, rounds int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		i := len(s.gens) - 1
		g := s.gens[i]
		usedByAll, settled := true, true
		for _, w := range workers {
			first, used := g.usedBy[w]
			usedByAll = usedByAll && used
			settled = settled && used && time.Since(first) >= revokeSettle
		}
		expiries := 0
		for _, r := range s.refreshes {
			if r.reason == "expiry" {
				expiries++
			}
		}
		fromExpiry := i > 0 && s.refreshes[i-1].reason == "expiry"
		switch {
		case s.revocations < rounds && fromExpiry && !g.revoked && settled && time.Since(g.issued) >= revokeAge:
			g.revoked = true
			s.revocations++
		case s.revocations == rounds && expiries >= rounds && !g.revoked && usedByAll:
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("the fleet did not go through %d expiries and revocations in %v: %s", rounds, timeout, s.summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- worker processes ----

// fleetProcess is one running worker.
type fleetProcess struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	result string

	// mu guards output and failing.
	mu      sync.Mutex
	output  []string
	failing bool // the worker reported its first failed call
	done    chan struct{}
}

// startWorkers starts n worker processes, and stops them at the end of
// the test if the test has not.
func startWorkers(t *testing.T, n int, cfg workerConfig) []*fleetProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	var procs []*fleetProcess
	for i := range n {
		c := cfg
		c.Name = fmt.Sprintf("worker-%d", i+1)
		c.Result = fmt.Sprintf("%s/%s.json", dir, c.Name)
		js, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		p := &fleetProcess{name: c.Name, result: c.Result, done: make(chan struct{})}
		// Killed if it outlives the context.
		p.cmd = exec.CommandContext(ctx, exe, "-test.run=^TestFleetWorker$", "-test.count=1", "-test.timeout=60s")
		p.cmd.Env = append(os.Environ(), workerEnv+"="+string(js))
		p.cmd.Stderr = &p.stderr
		p.cmd.WaitDelay = 5 * time.Second
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := p.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(p.done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				p.mu.Lock()
				p.output = append(p.output, line)
				if line == workerEvent+"failing" {
					p.failing = true
				}
				p.mu.Unlock()
			}
		}()
		procs = append(procs, p)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				<-p.done
				p.cmd.Wait()
			}
		}
	})
	return procs
}

// stopWorkers tells every worker to stop (by closing its stdin) and
// collects their results.
func stopWorkers(t *testing.T, procs []*fleetProcess) map[string]workerResult {
	t.Helper()
	for _, p := range procs {
		p.stdin.Close()
	}
	results := map[string]workerResult{}
	for _, p := range procs {
		<-p.done
		err := p.cmd.Wait()
		p.mu.Lock()
		out := strings.Join(p.output, "\n")
		p.mu.Unlock()
		if err != nil {
			t.Errorf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.name, err, out, p.stderr.String())
			continue
		}
		b, err := os.ReadFile(p.result)
		if err != nil {
			t.Errorf("%s reported nothing: %v\nstdout:\n%s\nstderr:\n%s", p.name, err, out, p.stderr.String())
			continue
		}
		var r workerResult
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		results[p.name] = r
	}
	return results
}

func names(procs []*fleetProcess) []string {
	var n []string
	for _, p := range procs {
		n = append(n, p.name)
	}
	return n
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// IsWorker reports whether this process is a fleet worker, started by
// Run or RunWithoutLocker.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// Run is the fleet test: replicas sharing a grant through store (a
// Locker) refresh it once per expiry or revocation, fleet-wide, with
// rotation on and 0 invalid_grant, and every API call succeeds. store is
// the parent's handle on the shared grant; each worker opens its own
// with the open function given to Worker, which receives params.
func Run(t *testing.T, store pandadocauth.Store, params map[string]string) {
	t.Helper()
	if _, ok := store.(pandadocauth.Locker); !ok {
		t.Fatalf("%T is not a pandadocauth.Locker", store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srv := newFleetServer(fleetEarly)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	t.Cleanup(func() { t.Log(srv.summary()) })
	if err := store.Save(ctx, srv.seed()); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	procs := startWorkers(t, fleetWorkers, workerConfig{
		Locker:   true,
		TokenURL: ts.URL + "/oauth2/access_token",
		APIURL:   ts.URL + "/public/v1/documents",
		Params:   params,
	})
	workers := names(procs)

	// Three rounds of: the token expires and is replaced; once every
	// worker has used the replacement, the parent revokes it.
	const rounds = 3
	driveErr := srv.drive(workers, rounds, 30*time.Second)
	results := stopWorkers(t, procs)
	elapsed := time.Since(start)

	t.Logf("%d workers ran for %v: %v", len(procs), elapsed.Round(time.Millisecond), results)
	if driveErr != nil {
		t.Fatal(driveErr)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()

	// Exactly one token request per expiry and per revocation,
	// fleet-wide: every request accepted (a second refresh with a
	// rotated refresh token would be refused), every one replacing a
	// revoked token or one within the early-refresh window (not one
	// that another process had replaced already), and one per
	// revocation.
	expiries, revoked := 0, 0
	for _, r := range srv.refreshes {
		switch r.reason {
		case "expiry":
			expiries++
		case "revoked":
			revoked++
		default:
			t.Errorf("a %s refresh, by %s", r.reason, r.worker)
		}
	}
	if srv.tokenPOSTs != len(srv.refreshes) || srv.invalidGrant != 0 || srv.badRequests != 0 {
		t.Errorf("%d token requests, %d accepted (%d invalid_grant, %d malformed); want all accepted",
			srv.tokenPOSTs, len(srv.refreshes), srv.invalidGrant, srv.badRequests)
	}
	if revoked != srv.revocations || expiries < rounds {
		t.Errorf("%d refreshes after revocation, %d after expiry; want %d and at least %d", revoked, expiries, srv.revocations, rounds)
	}

	// Every API call succeeded.
	for _, name := range workers {
		r, ok := results[name]
		if !ok {
			continue // reported by stopWorkers
		}
		if r.OK == 0 {
			t.Errorf("%s made no successful call", name)
		}
		for _, f := range r.Failures {
			if id, _, _ := strings.Cut(f, " "); !srv.excused[id] {
				t.Errorf("%s: call failed: %s", name, f)
			}
		}
		if r.Failed > len(r.Failures) {
			t.Errorf("%s: %d calls failed", name, r.Failed)
		}
	}

	// The store holds the newest token.
	got, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newest := srv.gens[len(srv.gens)-1]
	if got == nil || got.AccessToken != newest.access || got.RefreshToken != newest.refresh {
		t.Errorf("stored token = %v; want the newest, %s / %s", got, newest.access, newest.refresh)
	}
}

// RunWithoutLocker shows why fleet mode exists: replicas that each
// keep the grant's token to themselves all refresh it when it expires,
// and with rotation every one but the first gets invalid_grant and fails.
func RunWithoutLocker(t *testing.T) {
	t.Helper()
	srv := newFleetServer(fleetEarly)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	t.Cleanup(func() { t.Log(srv.summary()) })
	initial := srv.seed()

	procs := startWorkers(t, fleetWorkers, workerConfig{
		TokenURL: ts.URL + "/oauth2/access_token",
		APIURL:   ts.URL + "/public/v1/documents",
		Initial:  initial,
	})
	failing := func() int {
		n := 0
		for _, p := range procs {
			p.mu.Lock()
			if p.failing {
				n++
			}
			p.mu.Unlock()
		}
		return n
	}
	waitUntil(t, 3*fleetTTL, "all but one worker to fail", func() bool { return failing() >= fleetWorkers-1 })
	results := stopWorkers(t, procs)

	srv.mu.Lock()
	defer srv.mu.Unlock()
	failed := 0
	for _, r := range results {
		failed += r.Failed
	}
	t.Logf("%d workers failing, %d failed calls", failing(), failed)
	if len(srv.refreshes) < 1 || srv.invalidGrant < fleetWorkers-1 {
		t.Errorf("%d refreshes accepted, %d refused; want at least 1 and %d", len(srv.refreshes), srv.invalidGrant, fleetWorkers-1)
	}
	if failed < fleetWorkers-1 {
		t.Errorf("%d calls failed; want at least %d", failed, fleetWorkers-1)
	}
}

// memStore is a Store of one process's own: what a replica has without
// fleet mode.
type memStore struct {
	// mu guards tok.
	mu  sync.Mutex
	tok *oauth2.Token
}

func (m *memStore) Load(context.Context) (*oauth2.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tok, nil
}

func (m *memStore) Save(_ context.Context, t *oauth2.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tok = t
	return nil
}

// headerTransport adds a header to every request.
type headerTransport struct {
	name, value string
	base        http.RoundTripper
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.base.RoundTrip(r)
}

// Worker is one replica of the fleet tests, run in a process of its own
// (the test named TestFleetWorker). It opens the shared store with open,
// calls the API until its standard input closes, then writes its result.
// Outside a worker process it skips the test.
func Worker(t *testing.T, open func(t *testing.T, params map[string]string) pandadocauth.Store) {
	js := os.Getenv(workerEnv)
	if js == "" {
		t.Skip("helper process of TestFleet")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		t.Fatal(err)
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	src := &pandadocauth.TokenSource{
		Config: &pandadocauth.Config{
			ClientID:     "fleet-client",
			ClientSecret: "fleet-secret",
			TokenURL:     cfg.TokenURL,
			HTTPClient:   &http.Client{Transport: headerTransport{"X-Fleet-Worker", cfg.Name, base}, Timeout: 10 * time.Second},
		},
		EarlyRefresh: fleetEarly,
	}
	if cfg.Locker {
		src.Store = open(t, cfg.Params)
	} else {
		src.Initial = cfg.Initial
		src.Store = &memStore{}
	}
	client := &http.Client{Transport: &pandadocauth.Transport{Source: src, Base: base}, Timeout: 10 * time.Second}

	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()

	var (
		mu       sync.Mutex // guards result and reported
		result   workerResult
		reported bool
		wg       sync.WaitGroup
	)
	for g := range fleetGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				id := fmt.Sprintf("%s/%d/%d", cfg.Name, g, n)
				err := call(client, cfg, id)
				mu.Lock()
				if err == nil {
					result.OK++
				} else {
					result.Failed++
					if len(result.Failures) < 20 {
						result.Failures = append(result.Failures, id+" "+err.Error())
					}
					if !reported {
						reported = true
						fmt.Println(workerEvent + "failing")
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b, err := json.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Result, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// call makes one API call.
func call(client *http.Client, cfg workerConfig, id string) error {
	req, err := http.NewRequest(http.MethodGet, cfg.APIURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Fleet-Worker", cfg.Name)
	req.Header.Set("X-Request-Id", id)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
