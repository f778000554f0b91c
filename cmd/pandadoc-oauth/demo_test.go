package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
)

// demoRow is a parsed row of the demo's table.
type demoRow struct {
	phase, client                      string
	requests, failed, tokenPOSTs, late int
}

var demoRowRE = regexp.MustCompile(`^(\S+)?\s+(golang\.org/x/oauth2|pandadocauth)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+\.\d{3}s\s+(\d+)$`)

func TestDemo(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCmd(t, nil, "demo", "-workers", "6", "-latency", "20ms")
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	t.Logf("demo:\n%s", stdout)
	if !strings.Contains(stdout, "phase       client               requests  failed  token POSTs      wall  delayed\n") {
		t.Error("no table header")
	}
	var rows []demoRow
	phase := ""
	for _, line := range strings.Split(stdout, "\n") {
		m := demoRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] != "" {
			phase = m[1]
		}
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		rows = append(rows, demoRow{phase, m[2], n(3), n(4), n(5), n(6)})
	}
	if len(rows) != len(demoPhases)*len(demoClients) {
		t.Fatalf("%d table rows, want %d", len(rows), len(demoPhases)*len(demoClients))
	}
	for i, p := range demoPhases {
		for j, dc := range demoClients {
			if r := rows[i*len(demoClients)+j]; r.phase != p.name || r.client != dc.name {
				t.Errorf("row %d is %s/%s, want %s/%s", i*len(demoClients)+j, r.phase, r.client, p.name, dc.name)
			}
		}
	}
}

// TestDemoPhases checks what each phase shows, in the numbers that do
// not depend on timing: requests, failures and token POSTs.
func TestDemoPhases(t *testing.T) {
	t.Parallel()
	const workers = 5
	results, err := runDemo(context.Background(), workers, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ requests, failed, minPOSTs, maxPOSTs int }
	wants := map[string]map[string]want{
		// Both refresh once, when the token has expired on both sides.
		"expiry": {
			"golang.org/x/oauth2": {demoSequential, 0, 1, 1},
			"pandadocauth":        {demoSequential, 0, 1, 1},
		},
		// x/oauth2's mutex and pandadocauth's shared refresh both make
		// one POST for a burst.
		"burst": {
			"golang.org/x/oauth2": {workers, 0, 1, 1},
			"pandadocauth":        {workers, 0, 1, 1},
		},
		// x/oauth2 makes one POST per caller, one after the other;
		// pandadocauth one shared refresh, with its retries.
		"failing": {
			"golang.org/x/oauth2": {workers, workers, workers, workers},
			"pandadocauth":        {workers, workers, 1, 3},
		},
		// One refresh each: in the background for pandadocauth, at
		// x/oauth2's expiry margin for x/oauth2.
		"early": {
			"golang.org/x/oauth2": {2 * workers, 0, 1, 1},
			"pandadocauth":        {2 * workers, 0, 1, 1},
		},
		// x/oauth2 does not act on 401; pandadocauth refreshes once and
		// replays.
		"revocation": {
			"golang.org/x/oauth2": {workers, workers, 0, 0},
			"pandadocauth":        {workers, 0, 1, 1},
		},
	}
	if len(results) != len(demoPhases)*len(demoClients) {
		t.Fatalf("%d results", len(results))
	}
	for _, r := range results {
		w, ok := wants[r.phase][r.client]
		if !ok {
			t.Errorf("unexpected result %s/%s", r.phase, r.client)
			continue
		}
		if r.requests != w.requests || r.failed != w.failed || r.tokenPOSTs < w.minPOSTs || r.tokenPOSTs > w.maxPOSTs {
			t.Errorf("%s, %s: %d requests, %d failed, %d token POSTs; want %d, %d, %d to %d",
				r.phase, r.client, r.requests, r.failed, r.tokenPOSTs, w.requests, w.failed, w.minPOSTs, w.maxPOSTs)
		}
	}
}

// TestDemoCancel checks that the demo stops with an error when its
// context ends.
func TestDemoCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runDemo(ctx, 4, demoMaxLatency)
		done <- err
	}()
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("err = %v, want interrupted", err)
	}
}

// TestDemoWorkspaces checks the workspaces phase in the numbers that do
// not depend on timing: every request succeeds, each workspace is
// refreshed once by either contender, pandadocauth never has more token
// requests in flight than Grants.MaxRefreshes, and its Observer saw one
// refresh per workspace.
func TestDemoWorkspaces(t *testing.T) {
	t.Parallel()
	const n = 40
	results, err := runWorkspaces(context.Background(), n, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(workspaceContenders) {
		t.Fatalf("%d results, want %d", len(results), len(workspaceContenders))
	}
	for i, r := range results {
		if r.client != workspaceContenders[i].name || r.workspaces != n || r.requests != n*demoPerWorkspace || r.failed != 0 || r.tokenPOSTs != n {
			t.Errorf("%s: %d workspaces, %d requests, %d failed, %d token POSTs; want %d, %d, 0, %d",
				r.client, r.workspaces, r.requests, r.failed, r.tokenPOSTs, n, n*demoPerWorkspace, n)
		}
		if r.peakPOSTs < 1 {
			t.Errorf("%s: peak in flight %d; want at least 1", r.client, r.peakPOSTs)
		}
	}
	pd := results[1]
	if pd.peakPOSTs > pandadocauth.DefaultMaxRefreshes {
		t.Errorf("pandadocauth: %d token requests in flight at once; want at most %d", pd.peakPOSTs, pandadocauth.DefaultMaxRefreshes)
	}
	if pd.metrics == nil {
		t.Fatal("pandadocauth: no metrics")
	}
	m := pd.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.refreshes["refreshed/first_use"]; got != n || len(m.refreshes) != 1 {
		t.Errorf("refreshes %v; want refreshed/first_use %d only", m.refreshes, n)
	}
	if m.attempts != n {
		t.Errorf("attempts %d; want %d", m.attempts, n)
	}
	// Every workspace's first request waited for its refresh (later ones
	// may find the new token).
	if m.waiters < n {
		t.Errorf("waiters %d; want at least %d", m.waiters, n)
	}
	if results[0].metrics != nil {
		t.Error("x/oauth2 has metrics")
	}
}

// TestDemoMetrics checks what the pandadocauth clients' Observer counted
// in each phase, against the table: its attempts are the token POSTs,
// its refreshes the phase's, and every 401 in the revocation phase was
// replayed successfully.
func TestDemoMetrics(t *testing.T) {
	t.Parallel()
	const workers = 5
	results, err := runDemo(context.Background(), workers, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wantRefreshes := map[string]string{
		"expiry":     "refreshed/first_use 1",
		"burst":      "refreshed/first_use 1",
		"failing":    "transient/first_use 1",
		"early":      "refreshed/early 1",
		"revocation": "refreshed/rejected 1",
	}
	for _, r := range results {
		if r.client != "pandadocauth" {
			if r.metrics != nil {
				t.Errorf("%s, %s: metrics of a client without an Observer", r.phase, r.client)
			}
			continue
		}
		m := r.metrics
		if m == nil {
			t.Errorf("%s: no metrics", r.phase)
			continue
		}
		m.mu.Lock()
		if m.attempts != r.tokenPOSTs {
			t.Errorf("%s: %d attempts counted, %d token POSTs", r.phase, m.attempts, r.tokenPOSTs)
		}
		if got := formatCounts(m.refreshes); got != wantRefreshes[r.phase] {
			t.Errorf("%s: refreshes %s; want %s", r.phase, got, wantRefreshes[r.phase])
		}
		if m.saveFailed != 0 || m.lockWaits != 0 {
			t.Errorf("%s: %d save failures, %d lock waits; want none (no Store)", r.phase, m.saveFailed, m.lockWaits)
		}
		switch r.phase {
		case "revocation":
			if m.rejected["ok"] < 1 || len(m.rejected) != 1 || m.invalidated != 1 {
				t.Errorf("revocation: 401s %v, invalidated %d; want only ok replays, one invalidation", m.rejected, m.invalidated)
			}
		default:
			if len(m.rejected) != 0 {
				t.Errorf("%s: 401s %v; want none", r.phase, m.rejected)
			}
		}
		m.mu.Unlock()
	}
}

// TestDemoVerbose checks that demo -v prints the workspaces table and a
// metrics line per phase.
func TestDemoVerbose(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCmd(t, nil, "demo", "-v", "-workers", "3", "-latency", "5ms", "-workspaces", "8")
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	t.Logf("demo -v:\n%s", stdout)
	for _, want := range []string{
		"Many workspaces: 8 workspaces",
		"client               requests  failed  token POSTs  peak in flight      wall     heap/ws\n",
		"Metrics of the pandadocauth clients",
		"  workspaces  refreshes: refreshed/first_use 8; attempts 8; waiters ",
		"  revocation  refreshes: refreshed/rejected 1; attempts 1;",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	wsRow := regexp.MustCompile(`(?m)^(golang\.org/x/oauth2|pandadocauth)\s+16\s+0\s+8\s+\d+\s+\d+\.\d{3}s\s+(\d+ B|\?)$`)
	if n := len(wsRow.FindAllString(stdout, -1)); n != 2 {
		t.Errorf("%d workspaces rows with 16 requests, 0 failed, 8 token POSTs; want 2", n)
	}
	for _, p := range demoPhases {
		if !regexp.MustCompile(`(?m)^  ` + p.name + `\s+refreshes: `).MatchString(stdout) {
			t.Errorf("no metrics line for %s", p.name)
		}
	}

	// Without -v, no metrics; with -workspaces 0, no workspaces phase.
	code, stdout, _ = runCmd(t, nil, "demo", "-workers", "2", "-latency", "1ms", "-workspaces", "0")
	if code != exitOK || strings.Contains(stdout, "Metrics of") || strings.Contains(stdout, "Many workspaces") {
		t.Errorf("demo -workspaces 0 (exit %d) printed metrics or the workspaces phase:\n%s", code, stdout)
	}
	if code, _, stderr := runCmd(t, nil, "demo", "-workspaces", "-1"); code != exitUsage || !strings.Contains(stderr, "-workspaces must be between 0 and") {
		t.Errorf("demo -workspaces -1: exit %d, stderr %q; want a usage error", code, stderr)
	}
}

// TestDemoRateLimits checks the rate-limits phase in the numbers that do
// not depend on timing. The Limiter: no 429 reaches the caller, no
// document is created twice, and the caller hears of every lost answer
// (a 5xx). Either way, the documents the fake holds beyond the creates
// that succeeded are the lost answers: go-pandadoc's caller sees them as
// duplicates, or as creates that failed but happened (when its retries
// met 429s).
func TestDemoRateLimits(t *testing.T) {
	t.Parallel()
	const n = 120
	results, err := runRateLimits(context.Background(), n, 6, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(rateContenders) {
		t.Fatalf("%d results, want %d", len(results), len(rateContenders))
	}
	lost := n / demoLostEvery
	for i, r := range results {
		t.Logf("%+v", r)
		if r.client != rateContenders[i].name || r.creates != n || r.lost > lost {
			t.Errorf("result %d: %+v", i, r)
		}
		if r.documents-r.created != r.lost {
			t.Errorf("%s: %d documents, %d created: want %d more, the lost answers", r.client, r.documents, r.created, r.lost)
		}
	}
	lim := results[1]
	if lim.lost != lost {
		t.Errorf("Limiter: %d answers lost, want %d: every create gets its 201", lim.lost, lost)
	}
	if lim.to429 != 0 || lim.dupes != 0 || lim.to5xx != lost || lim.created != n-lost || lim.documents != n {
		t.Errorf("Limiter: %+v; want no 429 to the caller, no duplicate, the %d lost answers returned", lim, lost)
	}
	if gp := results[0]; gp.to5xx != 0 {
		t.Errorf("go-pandadoc style: %d 5xx to the caller, want none: it retries them", gp.to5xx)
	}
	var buf strings.Builder
	printRateLimits(&buf, results, time.Second)
	if !strings.Contains(buf.String(), "pandadocauth.Limiter") || !strings.Contains(buf.String(), "duplicates") {
		t.Errorf("table:\n%s", buf.String())
	}
}
