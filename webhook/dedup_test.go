package webhook_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/webhook"
)

func TestDeliveryKeys(t *testing.T) {
	t.Parallel()
	body := []byte(vectorBody)
	r := pandadoctest.NewWebhookRequest(target, testKey, body)
	id := r.Header.Get(webhook.EventIDHeader)
	keys := webhook.DeliveryKeys(r, body)
	sum := sha256.Sum256(body)
	if want := []string{"body:" + hex.EncodeToString(sum[:]), "id:" + id}; !slices.Equal(keys, want) {
		t.Errorf("DeliveryKeys = %q, want %q", keys, want)
	}
	// The body digest is the SHA-256 of the body, whatever the headers.
	r.Header.Del(webhook.EventIDHeader)
	if k := webhook.DeliveryKeys(r, body); len(k) != 1 || k[0] != keys[0] {
		t.Errorf("without an event ID: %q, want the body digest alone", k)
	}
	r.Header.Set(webhook.EventIDHeader, strings.Repeat("x", 65))
	if k := webhook.DeliveryKeys(r, body); len(k) != 1 {
		t.Errorf("with a 65-byte event ID: %q, want it ignored", k)
	}
}

// TestMemoryDedup is the specification of MemoryDedup's two phases.
func TestMemoryDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var m webhook.MemoryDedup
	claim := func(want webhook.ClaimState, keys ...string) {
		t.Helper()
		if got, err := m.Claim(ctx, keys); got != want || err != nil {
			t.Fatalf("Claim(%q) = %v, %v; want %v", keys, got, err, want)
		}
	}
	a := []string{"body:a", "id:1"}
	claim(webhook.Fresh, a...)
	claim(webhook.Running, a...)
	claim(webhook.Running, "id:1")                // a retry, body rendered anew
	claim(webhook.Running, "body:a", "id:forged") // a replay with another ID
	m.Release(ctx, a)
	claim(webhook.Fresh, a...) // released: the retry runs again
	m.Done(ctx, a)
	claim(webhook.Finished, a...)
	claim(webhook.Finished, "body:a")              // a replay without an ID
	claim(webhook.Finished, "body:a", "id:forged") // a replay with another ID...
	claim(webhook.Fresh, "body:b", "id:forged")    // ...did not record that ID
	claim(webhook.Finished, "body:c", "id:1")      // PandaDoc's retry with another body
	// Done and Release of keys not claimed together do nothing.
	m.Release(ctx, a)
	claim(webhook.Finished, a...)
	m.Done(ctx, []string{"body:zz"})
	claim(webhook.Fresh, "body:zz")
	m.Release(ctx, []string{"body:zz", "id:unrelated"})
	claim(webhook.Running, "body:zz")
	if n := m.Len(); n != 3 {
		t.Errorf("Len = %d, want 3 (a, b, zz)", n)
	}
}

// TestMemoryDedupBounded checks that a MemoryDedup remembers the last
// Max processed deliveries, and never forgets one being processed.
func TestMemoryDedupBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := &webhook.MemoryDedup{Max: 3}
	running := []string{"body:running"}
	m.Claim(ctx, running)
	for i := range 100 {
		keys := []string{fmt.Sprint("body:", i), fmt.Sprint("id:", i)}
		if s, _ := m.Claim(ctx, keys); s != webhook.Fresh {
			t.Fatalf("delivery %d: %v", i, s)
		}
		m.Done(ctx, keys)
		if n := m.Len(); n > 4 {
			t.Fatalf("after %d deliveries, Len = %d, want at most 3 + 1 running", i+1, n)
		}
	}
	for i := range 100 {
		want := webhook.Fresh // forgotten
		if i >= 97 {
			want = webhook.Finished
		}
		if s, _ := m.Claim(ctx, []string{fmt.Sprint("id:", i)}); s != want {
			t.Errorf("delivery %d: %v, want %v", i, s, want)
		}
	}
	if s, _ := m.Claim(ctx, running); s != webhook.Running {
		t.Errorf("the running delivery: %v, want Running", s)
	}
	// The zero value remembers DefaultDedupMax.
	var z webhook.MemoryDedup
	for i := range webhook.DefaultDedupMax + 1 {
		keys := []string{fmt.Sprint("body:", i)}
		z.Claim(ctx, keys)
		z.Done(ctx, keys)
	}
	if n := z.Len(); n != webhook.DefaultDedupMax {
		t.Errorf("zero value: Len = %d, want %d", n, webhook.DefaultDedupMax)
	}
}

// dedupServer is a Verifier with a MemoryDedup around next.
func dedupHandler(next http.Handler) (http.Handler, *testutil.Buffer) {
	log, logs := testutil.NewLogger()
	return (&webhook.Verifier{Keys: []string{testKey}, Dedup: &webhook.MemoryDedup{}, Logger: log}).Handler(next), logs
}

// TestHandlerDedup is the specification of Handler with a Dedup: which
// copies of a delivery run next, and what each is answered.
func TestHandlerDedup(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	// copyOf returns a copy of first, changed by edit.
	copyOf := func(first *http.Request, edit func(r *http.Request)) *http.Request {
		r := pandadoctest.NewWebhookRequest(target, testKey, body)
		r.Header.Set(webhook.EventIDHeader, first.Header.Get(webhook.EventIDHeader))
		if edit != nil {
			edit(r)
		}
		return r
	}
	tests := []struct {
		name     string
		statuses []int // what next answers, in turn
		copies   []func(r *http.Request)
		want     []int // what each delivery is answered
		wantRuns int
	}{
		{name: "PandaDoc's retries", copies: []func(*http.Request){nil, nil, nil}, want: []int{200, 200, 200}, wantRuns: 1},
		{name: "a retry after a failure runs again", statuses: []int{500, 200}, copies: []func(*http.Request){nil, nil, nil},
			want: []int{500, 200, 200}, wantRuns: 2},
		{name: "a retry after a 4xx runs again", statuses: []int{422, 204}, copies: []func(*http.Request){nil, nil, nil},
			want: []int{422, 204, 200}, wantRuns: 2},
		{name: "a replay with another event ID", copies: []func(*http.Request){nil, func(r *http.Request) {
			r.Header.Set(webhook.EventIDHeader, "00000000-0000-4000-8000-000000000000")
		}}, want: []int{200, 200}, wantRuns: 1},
		{name: "a replay without an event ID", copies: []func(*http.Request){nil, func(r *http.Request) {
			r.Header.Del(webhook.EventIDHeader)
		}}, want: []int{200, 200}, wantRuns: 1},
		{name: "a replay with an oversized event ID", copies: []func(*http.Request){nil, func(r *http.Request) {
			r.Header.Set(webhook.EventIDHeader, strings.Repeat("f", 10000))
		}}, want: []int{200, 200}, wantRuns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var runs atomic.Int32
			h, logs := dedupHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(runs.Add(1))
				if n <= len(tt.statuses) {
					w.WriteHeader(tt.statuses[n-1])
				}
			}))
			first := pandadoctest.NewWebhookRequest(target, testKey, body)
			for i, edit := range tt.copies {
				r := first
				if i > 0 {
					r = copyOf(first, edit)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != tt.want[i] {
					t.Errorf("delivery %d: status %d, want %d", i+1, w.Code, tt.want[i])
				}
			}
			if n := int(runs.Load()); n != tt.wantRuns {
				t.Errorf("next ran %d times, want %d", n, tt.wantRuns)
			}
			if s := logs.String(); s != "" {
				t.Errorf("logged:\n%s", s)
			}
		})
	}
}

// TestHandlerDedupConcurrent delivers a copy while next still runs the
// first: the copy is answered 409, so that PandaDoc comes back, and a
// copy after the first's 2xx is answered 200 without next.
func TestHandlerDedupConcurrent(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	h, _ := dedupHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			close(entered)
			<-release
		}
	}))
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	first := pandadoctest.NewWebhookRequest(target, testKey, body)
	done := make(chan int)
	go func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, first)
		done <- w.Code
	}()
	testutil.Recv(t, entered, "next to run the first delivery")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body))
	if w.Code != http.StatusConflict {
		t.Errorf("copy during the first: status %d, want 409", w.Code)
	}
	close(release)
	if code := testutil.Recv(t, done, "the first delivery"); code != 200 {
		t.Errorf("first delivery: status %d", code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body))
	if w.Code != 200 || runs.Load() != 1 {
		t.Errorf("copy after the first: status %d, next ran %d times; want 200 and 1", w.Code, runs.Load())
	}
}

// TestHandlerDedupPanic checks that a delivery whose next panicked is
// released, so that PandaDoc's retry runs next again.
func TestHandlerDedupPanic(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	h, _ := dedupHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			panic(http.ErrAbortHandler)
		}
	}))
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	r := pandadoctest.NewWebhookRequest(target, testKey, body)
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("recovered %v, want next's panic", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body))
	if w.Code != 200 || runs.Load() != 2 {
		t.Errorf("retry after a panic: status %d, next ran %d times; want 200 and 2", w.Code, runs.Load())
	}
}

// failingDedup fails every call.
type failingDedup struct{ claims, dones, releases atomic.Int32 }

var errDedup = errors.New("dedup store unreachable")

func (f *failingDedup) Claim(context.Context, []string) (webhook.ClaimState, error) {
	f.claims.Add(1)
	return webhook.Fresh, errDedup
}
func (f *failingDedup) Done(context.Context, []string) error    { f.dones.Add(1); return errDedup }
func (f *failingDedup) Release(context.Context, []string) error { f.releases.Add(1); return errDedup }

// workingAfterClaim claims, then fails to record the outcome.
type workingAfterClaim struct{ failingDedup }

func (f *workingAfterClaim) Claim(context.Context, []string) (webhook.ClaimState, error) {
	f.claims.Add(1)
	return webhook.Fresh, nil
}

// TestHandlerDedupFails checks what Handler does when its Dedup fails:
// a failed Claim refuses the delivery with 503 (PandaDoc retries it)
// without running next; a failed Done or Release is logged, and next's
// answer stands.
func TestHandlerDedupFails(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	log, logs := testutil.NewLogger()
	var runs atomic.Int32
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 2 {
			w.WriteHeader(500)
		}
	})

	claimFails := &failingDedup{}
	w := httptest.NewRecorder()
	(&webhook.Verifier{Keys: []string{testKey}, Dedup: claimFails, Logger: log}).Handler(next).ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body))
	if w.Code != 503 || runs.Load() != 0 || claimFails.dones.Load()+claimFails.releases.Load() != 0 {
		t.Errorf("failed Claim: status %d, next ran %d times; want 503 and 0", w.Code, runs.Load())
	}

	recordFails := &workingAfterClaim{}
	h := (&webhook.Verifier{Keys: []string{testKey}, Dedup: recordFails, Logger: log}).Handler(next)
	for _, want := range []int{200, 500} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body))
		if w.Code != want {
			t.Errorf("status %d, want next's %d", w.Code, want)
		}
	}
	if recordFails.dones.Load() != 1 || recordFails.releases.Load() != 1 {
		t.Errorf("%d Done and %d Release, want 1 each", recordFails.dones.Load(), recordFails.releases.Load())
	}
	for _, msg := range []string{"dedup claim failed", "dedup done failed", "dedup release failed"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logs)
		}
	}
}

// TestHandlerDedupWithSender runs PandaDoc's behaviour end to end: a
// handler that fails once, the sender's retry, then a manual resend.
func TestHandlerDedupWithSender(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	h, _ := dedupHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			http.Error(w, "database down", http.StatusServiceUnavailable)
		}
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var waits []time.Duration
	s := &pandadoctest.WebhookSender{
		Key:     testKey,
		Retries: []time.Duration{time.Minute, time.Hour},
		Wait: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		},
	}
	ctx := testutil.Context(t)
	d, err := s.Send(ctx, srv.URL, pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	if err != nil || len(d.Attempts) != 2 || d.Attempts[0].Status != 503 || d.Status() != 200 {
		t.Fatalf("Send: %v, attempts %+v", err, d.Attempts)
	}
	again, err := s.Resend(ctx, d)
	if err != nil || again.Status() != 200 || !strings.Contains(string(again.Attempts[0].Body), "duplicate") {
		t.Errorf("Resend: %v, %+v", err, again.Attempts)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("next ran %d times, want 2 (the failure and the retry)", n)
	}
	if len(waits) != 1 || waits[0] != time.Minute {
		t.Errorf("waits %v, want [1m0s]", waits)
	}
}
