package pandadocauth

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

// recorder is an Observer that records every event.
type recorder struct {
	mu       sync.Mutex // guards the fields below
	starts   []RefreshStartInfo
	joins    int
	dones    []RefreshDoneInfo
	rejects  []RejectedInfo
	saves    []SaveFailedInfo
	locks    []LockWaitedInfo
	flightOK bool // every join and done got the context RefreshStart returned
}

type flightKey struct{}

func (r *recorder) observer() *Observer {
	r.flightOK = true
	return &Observer{
		RefreshStart: func(ctx context.Context, info RefreshStartInfo) context.Context {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.starts = append(r.starts, info)
			return context.WithValue(ctx, flightKey{}, len(r.starts))
		},
		RefreshJoin: func(flight, caller context.Context) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.joins++
			r.flightOK = r.flightOK && flight.Value(flightKey{}) != nil
		},
		RefreshDone: func(ctx context.Context, info RefreshDoneInfo) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.dones = append(r.dones, info)
			r.flightOK = r.flightOK && ctx.Value(flightKey{}) == len(r.dones)
		},
		Rejected: func(ctx context.Context, info RejectedInfo) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rejects = append(r.rejects, info)
		},
		SaveFailed: func(ctx context.Context, info SaveFailedInfo) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.saves = append(r.saves, info)
		},
		LockWaited: func(ctx context.Context, info LockWaitedInfo) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.locks = append(r.locks, info)
		},
	}
}

// TestObserverRefreshBurst: n callers on an expired token are one flight:
// one start, n-1 joins, one done with n waiters and 1 attempt.
func TestObserverRefreshBurst(t *testing.T) {
	t.Parallel()
	const n = 20
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
	ts, _, clock := newSource(t, srv, time.Hour)
	rec := &recorder{}
	ts.Observer = rec.observer()
	ts.Token()
	clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ts.Token(); err != nil {
				t.Error(err)
			}
		}()
	}
	waitForWaiters(t, ts, n)
	srv.ReleaseTokenRequests()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.starts) != 1 || rec.starts[0].Reason != ReasonExpired {
		t.Errorf("starts %+v, want one, expired", rec.starts)
	}
	if rec.joins != n-1 {
		t.Errorf("%d joins, want %d", rec.joins, n-1)
	}
	if len(rec.dones) != 1 {
		t.Fatalf("dones %+v, want one", rec.dones)
	}
	d := rec.dones[0]
	if d.Outcome != OutcomeRefreshed || d.Attempts != 1 || d.Waiters != n || d.Err != nil {
		t.Errorf("done %+v, want refreshed, 1 attempt, %d waiters", d, n)
	}
	if !rec.flightOK {
		t.Error("a join or done did not get the flight's context")
	}
}

// TestObserverOutcomes: each way a flight ends is reported as such.
func TestObserverOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		status   int
		body     string
		outcome  RefreshOutcome
		attempts int
	}{
		{"refreshed", 200, `{"access_token":"at-SECRET-1","expires_in":3600}`, OutcomeRefreshed, 1},
		{"permanent", 400, `{"error":"invalid_grant"}`, OutcomePermanent, 1},
		{"transient", 503, `busy`, OutcomeTransient, maxAttempts},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, nil, time.Hour)
			mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(tc.status, tc.body))
			rec := &recorder{}
			ts.Observer = rec.observer()
			clock.Advance(2 * time.Hour)
			_, err := ts.Token()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.dones) != 1 {
				t.Fatalf("dones %+v", rec.dones)
			}
			d := rec.dones[0]
			if d.Outcome != tc.outcome || d.Attempts != tc.attempts {
				t.Errorf("done %+v, want %v after %d attempts", d, tc.outcome, tc.attempts)
			}
			if (d.Err != nil) != (err != nil) || d.Err != nil && d.Err.Error() != err.Error() {
				t.Errorf("done error %v, caller got %v", d.Err, err)
			}
			if d.Err != nil {
				assertNoSecret(t, "event error", d.Err.Error())
			}
		})
	}
}

// TestObserverEarlyAdoptedSaveLock: early refresh, adoption from the
// Store, a failed Save and the Locker's wait are reported.
func TestObserverEarlyAdoptedSaveLock(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, _ := newSource(t, srv, 10*time.Minute)
	clock := newFakeClock() // the Save-retry timer fires only when advanced
	ts.clk = &clockRef{clock}
	store := &lockingMemStore{memStore: &memStore{saveErrs: 1}}
	ts.Store = store
	rec := &recorder{}
	ts.Observer = rec.observer()
	ts.Token()
	clock.Advance(6 * time.Minute) // inside the early window
	ts.Token()
	settle(ts)
	// Another process stores a token; a forced refresh adopts it.
	store.mu.Lock()
	store.tok = &oauth2.Token{AccessToken: "at-SECRET-other", RefreshToken: "rt-SECRET-other", Expiry: clock.Now().Add(time.Hour)}
	store.mu.Unlock()
	if tok, err := ts.Refresh(context.Background()); err != nil || tok.AccessToken != "at-SECRET-other" {
		t.Fatalf("%v, %v", tok, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var reasons []RefreshReason
	var outcomes []RefreshOutcome
	for i, d := range rec.dones {
		reasons = append(reasons, rec.starts[i].Reason)
		outcomes = append(outcomes, d.Outcome)
	}
	wantReasons := []RefreshReason{ReasonEarly, ReasonForced}
	wantOutcomes := []RefreshOutcome{OutcomeRefreshed, OutcomeAdopted}
	if len(reasons) != 2 || reasons[0] != wantReasons[0] || reasons[1] != wantReasons[1] || outcomes[0] != wantOutcomes[0] || outcomes[1] != wantOutcomes[1] {
		t.Errorf("flights %v %v, want %v %v", reasons, outcomes, wantReasons, wantOutcomes)
	}
	if len(rec.saves) != 1 || rec.saves[0].Retry || rec.saves[0].Err == nil {
		t.Errorf("save failures %+v, want one, not a retry", rec.saves)
	}
	// The early refresh's Save failed, so it kept the lock; the forced
	// refresh took that lock over instead of waiting for it again.
	if len(rec.locks) != 1 {
		t.Errorf("%d lock waits, want 1 (the unsaved token kept the lock)", len(rec.locks))
	}
}

// lockingMemStore is a memStore that is also a Locker.
type lockingMemStore struct{ *memStore }

func (l *lockingMemStore) Lock(ctx context.Context) (func(), error) { return func() {}, nil }

// TestObserverRejected: a 401 is reported with its replay's outcome.
func TestObserverRejected(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	api := &apiResponder{accept: func(tok string) bool { return tok != testAccess }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	mt.RegisterResponder("POST", apiURL, api.responder())
	rec := &recorder{}
	ts.Observer = rec.observer()
	client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}
	resp, err := client.Get(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rec.mu.Lock()
	got := append([]RejectedInfo(nil), rec.rejects...)
	rec.mu.Unlock()
	if len(got) != 1 || !got[0].Invalidated || got[0].Replay != ReplayOK {
		t.Errorf("rejections %+v, want one, invalidated, replayed ok", got)
	}
	if len(rec.starts) != 1 || rec.starts[0].Reason != ReasonRejected {
		t.Errorf("starts %+v, want one, rejected", rec.starts)
	}
}
