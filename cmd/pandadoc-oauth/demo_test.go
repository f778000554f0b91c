package main

import (
	"context"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	start := time.Now()
	code, stdout, stderr := runCmd(t, nil, "demo", "-duration", "1200ms", "-workers", "8")
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	t.Logf("demo ran in %v:\n%s", time.Since(start), stdout)
	for _, want := range []string{
		"pandadocauth (pandadocauth.Transport + pandadocauth.TokenSource)",
		"golang.org/x/oauth2 (oauth2.Transport + oauth2.Config.TokenSource)",
		"token POSTs",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, p := range demoPhases {
		if n := strings.Count(stdout, "\n  "+p.name+" "); n != 3 { // the legend and two tables
			t.Errorf("phase %q appears %d times, want 3", p.name, n)
		}
	}
	m := regexp.MustCompile(`(?m)^pandadocauth: (\d+) of (\d+) requests failed, (\d+) token POSTs\.$`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatal("no summary line for pandadocauth")
	}
	if m[1] != "0" || m[2] == "0" {
		t.Errorf("pandadocauth: %s of %s requests failed, want 0 of some", m[1], m[2])
	}
	if !regexp.MustCompile(`(?m)^golang.org/x/oauth2: \d+ of \d+ requests failed`).MatchString(stdout) {
		t.Error("no summary line for golang.org/x/oauth2")
	}
}

// TestDemoPhases checks what each client does in each phase.
func TestDemoPhases(t *testing.T) {
	t.Parallel()
	results, err := runDemo(context.Background(), 4, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(demoClients) {
		t.Fatalf("%d results, want %d", len(results), len(demoClients))
	}
	pda, x := results[0], results[1]
	for i, p := range pda.phases {
		if p.requests == 0 || p.failed != 0 {
			t.Errorf("pandadocauth, %s: %d requests, %d failed; want some, none failed", demoPhases[i].name, p.requests, p.failed)
		}
	}
	// One refresh on expiry, one on revocation, three attempts under
	// faults (503, 502, success).
	if got := pda.total.tokenPOSTs; got != 5 {
		t.Errorf("pandadocauth: %d token POSTs, want 5", got)
	}
	if x.phases[0].failed != 0 {
		t.Errorf("x/oauth2, steady: %d failed", x.phases[0].failed)
	}
	// x/oauth2 does not act on 401: after the server expires its token,
	// every request fails and it never refreshes.
	for i := 2; i < len(x.phases); i++ {
		if p := x.phases[i]; p.ok != 0 {
			t.Errorf("x/oauth2, %s: %d ok, want none", demoPhases[i].name, p.ok)
		}
	}
	if x.total.tokenPOSTs != 0 {
		t.Errorf("x/oauth2: %d token POSTs, want 0", x.total.tokenPOSTs)
	}
}

// TestDemoCancel checks that the demo stops soon after its context ends,
// whatever phase it is in.
func TestDemoCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := runDemo(ctx, 4, time.Minute)
	if err == nil {
		t.Error("no error from an interrupted demo")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the demo took %v to stop", d)
	}
}

func TestHistogram(t *testing.T) {
	t.Parallel()
	var h histogram
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v", got)
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	var sum histogram
	sum.add(&h)
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0, time.Microsecond}, {1, time.Millisecond}} {
		got := sum.quantile(tt.q)
		if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 0.04 {
			t.Errorf("quantile(%v) = %v, want %v ± 4%%", tt.q, got, tt.want)
		}
	}
}
