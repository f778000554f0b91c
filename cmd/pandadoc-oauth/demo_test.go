package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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
