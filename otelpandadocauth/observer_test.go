package otelpandadocauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/oauth2"
)

// expired returns a new grant's token, made to look expired: the first
// use of a source holding it refreshes.
func expired(srv *pandadoctest.Server) *oauth2.Token {
	tok := srv.IssueToken()
	tok.Expiry = time.Now().Add(-time.Hour)
	return tok
}

// spanAttr returns the attribute key of span s.
func spanAttr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// TestRefreshBurst: n callers, each in a span of its own, on an expired
// token are one refresh: counted once, with n waiters, and one span that
// is the child of one caller's span and links to the others'.
func TestRefreshBurst(t *testing.T) {
	t.Parallel()
	const n = 8
	h := newHarness(t)
	cfg := h.srv.Config()
	g := &gate{base: cfg.HTTPClient.Transport, open: make(chan struct{}), sent: make(chan trace.SpanContext, 1)}
	cfg.HTTPClient = &http.Client{Transport: g}
	obs := h.observer(t)
	joined := make(chan struct{}, n)
	join := obs.RefreshJoin
	obs.RefreshJoin = func(flight, caller context.Context) {
		join(flight, caller)
		joined <- struct{}{}
	}
	ts := cfg.TokenSource(expired(h.srv))
	ts.Observer = obs

	tracer := h.tp.Tracer("test")
	callers := make([]trace.SpanContext, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, span := tracer.Start(context.Background(), "caller")
			defer span.End()
			callers[i] = span.SpanContext()
			if _, err := ts.TokenContext(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	for range n - 1 {
		<-joined
	}
	close(g.open)
	wg.Wait()

	if got := h.srv.TokenRequests("refresh_token"); got != 1 {
		t.Errorf("%d refresh requests, want 1", got)
	}
	rm := h.collect(t)
	set := kv("reason", "first_use", "outcome", "refreshed")
	wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{set: 1})
	if got := histograms(t, rm, "pandadocauth.refresh.waiters", "{caller}"); len(got) != 1 || got[set.Equivalent()] != (hist{1, n}) {
		t.Errorf("waiters %v, want count 1, sum %d", describe(rm, "pandadocauth.refresh.waiters"), n)
	}
	if got := histograms(t, rm, "pandadocauth.refresh.duration", "s"); len(got) != 1 || got[set.Equivalent()].count != 1 || got[set.Equivalent()].sum <= 0 {
		t.Errorf("duration %v, want one positive duration", got)
	}

	spans := h.refreshSpans()
	if len(spans) != 1 {
		t.Fatalf("%d refresh spans, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanKind() != trace.SpanKindInternal || s.Status().Code != codes.Unset {
		t.Errorf("span kind %v, status %+v", s.SpanKind(), s.Status())
	}
	if s.InstrumentationScope().Name != otelpandadocauth.ScopeName {
		t.Errorf("scope %+v", s.InstrumentationScope())
	}
	for key, want := range map[string]attribute.Value{
		"reason":   attribute.StringValue("first_use"),
		"outcome":  attribute.StringValue("refreshed"),
		"attempts": attribute.IntValue(1),
		"waiters":  attribute.IntValue(n),
	} {
		if got := spanAttr(s, key); got != want {
			t.Errorf("span attribute %s = %v, want %v", key, got.Emit(), want.Emit())
		}
	}
	// The parent and the links are the n callers' spans, each once.
	seen := map[trace.SpanID]int{s.Parent().SpanID(): 1}
	if len(s.Links()) != n-1 {
		t.Errorf("%d links, want %d", len(s.Links()), n-1)
	}
	for _, l := range s.Links() {
		seen[l.SpanContext.SpanID()]++
	}
	for i, c := range callers {
		if seen[c.SpanID()] != 1 {
			t.Errorf("caller %d's span is the parent or a link %d times, want once", i, seen[c.SpanID()])
		}
	}
	if s.Parent().TraceID() != s.SpanContext().TraceID() {
		t.Error("the refresh span is not in its parent's trace")
	}
	// The token request ran in the refresh span's context.
	if sc := <-g.sent; sc.SpanID() != s.SpanContext().SpanID() {
		t.Errorf("token request sent in span %v, want the refresh span %v", sc.SpanID(), s.SpanContext().SpanID())
	}
}

// TestRefreshFailures: a refused grant is a permanent failure, a 429 a
// transient one; both end the span with an error status carrying the
// caller's error, and with no secret anywhere.
func TestRefreshFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fault   pandadoctest.Fault
		outcome string
	}{
		{"permanent", pandadoctest.Body(400, "application/json", `{"error":"invalid_grant","error_description":"refresh token revoked"}`), "permanent"},
		{"transient", pandadoctest.Status(429), "transient"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.srv.FailAlways(tc.fault)
			cfg := h.srv.Config()
			tok := expired(h.srv)
			ts := cfg.TokenSource(tok)
			ts.Observer = h.observer(t)
			_, err := ts.TokenContext(context.Background()) // no caller span
			if err == nil {
				t.Fatal("no error")
			}
			rm := h.collect(t)
			set := kv("reason", "first_use", "outcome", tc.outcome)
			wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{set: 1})
			if got := histograms(t, rm, "pandadocauth.refresh.waiters", "{caller}")[set.Equivalent()]; got != (hist{1, 1}) {
				t.Errorf("waiters %+v, want count 1, sum 1", got)
			}
			spans := h.refreshSpans()
			if len(spans) != 1 {
				t.Fatalf("%d refresh spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Parent().IsValid() {
				t.Error("a caller without a span got a refresh span with a parent")
			}
			if st := s.Status(); st.Code != codes.Error || st.Description != err.Error() {
				t.Errorf("status %+v, want an error with %q", st, err.Error())
			}
			if got := spanAttr(s, "error.type").AsString(); got != tc.outcome {
				t.Errorf("error.type %q, want %q", got, tc.outcome)
			}
			if got := spanAttr(s, "attempts").AsInt64(); got != 1 {
				t.Errorf("%d attempts, want 1", got)
			}
			h.assertNoSecret(t, rm, tok.AccessToken, tok.RefreshToken, pandadoctest.DefaultClientSecret)
		})
	}
}

// TestRejectedReplay: a 401 invalidates the token, a refresh follows
// with reason rejected, and the replay succeeds.
func TestRejectedReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.srv.Config()
	tok := h.srv.IssueToken()
	ts := cfg.TokenSource(tok)
	ts.Observer = h.observer(t)
	h.srv.ExpireAll()
	client := &http.Client{Transport: &pandadocauth.Transport{Source: ts, Base: h.srv.Client().Transport}}
	resp, err := client.Get(h.srv.URL + "/public/v1/documents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rm := h.collect(t)
	wantSums(t, rm, "pandadocauth.rejections", "{response}", map[attribute.Set]int64{
		kv("outcome", "ok", "invalidated", "true"): 1,
	})
	wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{
		kv("reason", "rejected", "outcome", "refreshed"): 1,
	})
	newTok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	h.assertNoSecret(t, rm, tok.AccessToken, tok.RefreshToken, newTok.AccessToken, pandadoctest.DefaultClientSecret)
}

// failingStore is a Store and Locker whose first fails Saves fail.
type failingStore struct {
	mu    sync.Mutex // guards the fields below
	fails int
	tok   *oauth2.Token
}

func (s *failingStore) Load(ctx context.Context) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok, nil
}

func (s *failingStore) Save(ctx context.Context, t *oauth2.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails > 0 {
		s.fails--
		return errors.New("store unavailable")
	}
	s.tok = t
	return nil
}

func (s *failingStore) Lock(ctx context.Context) (func(), error) { return func() {}, nil }

// TestSaveFailures: a failed Save after a refresh and a failed retry are
// counted apart; the retries are refreshes with reason save; the Locker's
// lock is waited for once: the unsaved token keeps it for the retries.
func TestSaveFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	store := &failingStore{fails: 2}
	ts := h.srv.Config().TokenSource(expired(h.srv))
	ts.Store = store
	ts.Observer = h.observer(t)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Wait() // retries the Save until it passes: the second retry does
	rm := h.collect(t)
	wantSums(t, rm, "pandadocauth.save.failures", "{failure}", map[attribute.Set]int64{
		kv("retry", "false"): 1,
		kv("retry", "true"):  1,
	})
	wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{
		kv("reason", "first_use", "outcome", "refreshed"): 1,
		kv("reason", "save", "outcome", "unchanged"):      1,
		kv("reason", "save", "outcome", "saved"):          1,
	})
	acquired := kv("outcome", "acquired")
	locks := histograms(t, rm, "pandadocauth.lock.wait_time", "s")
	if len(locks) != 1 || locks[acquired.Equivalent()].count != 1 {
		t.Errorf("lock waits %v, want 1 acquired", describe(rm, "pandadocauth.lock.wait_time"))
	}
	// The refresh's span notes its failed Save.
	var events int
	for _, s := range h.refreshSpans() {
		for _, e := range s.Events() {
			if e.Name == "pandadocauth.save_failed" {
				events++
			}
		}
	}
	if events != 2 {
		t.Errorf("%d save_failed span events, want 2", events)
	}
}

// TestGrantAttribute: the grant attribute is added only when asked for,
// and only for a grant that has a key.
func TestGrantAttribute(t *testing.T) {
	t.Parallel()
	for _, with := range []bool{false, true} {
		h := newHarness(t)
		var opts []otelpandadocauth.Option
		if with {
			opts = append(opts, otelpandadocauth.WithGrantAttribute())
		}
		obs := h.observer(t, opts...)
		for _, grant := range []string{"acme", ""} {
			ctx := obs.RefreshStart(context.Background(), pandadocauth.RefreshStartInfo{Grant: grant, Reason: pandadocauth.ReasonExpired})
			obs.RefreshDone(ctx, pandadocauth.RefreshDoneInfo{Grant: grant, Reason: pandadocauth.ReasonExpired, Outcome: pandadocauth.OutcomeRefreshed, Attempts: 1, Waiters: 1})
			obs.Rejected(ctx, pandadocauth.RejectedInfo{Grant: grant, Replay: pandadocauth.ReplayFailed})
			obs.SaveFailed(ctx, pandadocauth.SaveFailedInfo{Grant: grant, Err: errors.New("down")})
		}
		rm := h.collect(t)
		refreshed := kv("reason", "expired", "outcome", "refreshed")
		acme := kv("reason", "expired", "outcome", "refreshed", "grant", "acme")
		want := map[attribute.Set]int64{refreshed: 2}
		wantRej := map[attribute.Set]int64{kv("outcome", "failed", "invalidated", "false"): 2}
		wantSave := map[attribute.Set]int64{kv("retry", "false"): 2}
		if with {
			want = map[attribute.Set]int64{refreshed: 1, acme: 1}
			wantRej = map[attribute.Set]int64{kv("outcome", "failed", "invalidated", "false"): 1, kv("outcome", "failed", "invalidated", "false", "grant", "acme"): 1}
			wantSave = map[attribute.Set]int64{kv("retry", "false"): 1, kv("retry", "false", "grant", "acme"): 1}
		}
		wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", want)
		wantSums(t, rm, "pandadocauth.rejections", "{response}", wantRej)
		wantSums(t, rm, "pandadocauth.save.failures", "{failure}", wantSave)
		var grants []string
		for _, s := range h.refreshSpans() {
			if v := spanAttr(s, "grant"); v.Type() != attribute.INVALID {
				grants = append(grants, v.AsString())
			}
		}
		if with && (len(grants) != 1 || grants[0] != "acme") || !with && len(grants) != 0 {
			t.Errorf("WithGrantAttribute %v: span grants %q", with, grants)
		}
	}
}

// TestForeignContext: funcs given a context that RefreshStart did not
// return (another Observer wrapping these) record the metrics and leave
// the caller's span alone.
func TestForeignContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	obs := h.observer(t)
	ctx, span := h.tp.Tracer("test").Start(context.Background(), "caller")
	obs.RefreshJoin(ctx, ctx)
	obs.RefreshDone(ctx, pandadocauth.RefreshDoneInfo{Outcome: pandadocauth.OutcomeLoaded, Err: nil})
	obs.SaveFailed(ctx, pandadocauth.SaveFailedInfo{Err: errors.New("down")})
	if len(h.spans.Ended()) != 0 {
		t.Error("the caller's span was ended")
	}
	span.End()
	s := h.spans.Ended()[0]
	if len(s.Links()) != 0 || len(s.Events()) != 0 || len(s.Attributes()) != 0 {
		t.Errorf("the caller's span was changed: %v %v %v", s.Links(), s.Events(), s.Attributes())
	}
	rm := h.collect(t)
	wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{kv("reason", "first_use", "outcome", "loaded"): 1})
}

// TestNewObserverError: an instrument that cannot be created is an
// error naming the package.
func TestNewObserverError(t *testing.T) {
	t.Parallel()
	_, err := otelpandadocauth.NewObserver(otelpandadocauth.WithMeterProvider(failingMeterProvider{}))
	if err == nil || !errors.Is(err, errInstrument) || !strings.HasPrefix(err.Error(), "otelpandadocauth: ") {
		t.Errorf("error %v", err)
	}
}

var errInstrument = errors.New("no instrument")

// failingMeterProvider's meters fail to create counters.
type failingMeterProvider struct{ noop.MeterProvider }

func (failingMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return failingMeter{} }

// failingMeter fails to create counters.
type failingMeter struct{ noop.Meter }

func (failingMeter) Int64Counter(string, ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return noop.Int64Counter{}, errInstrument
}

// TestEarlyRefresh: a request inside the early-refresh window is served
// at once and starts a background refresh, reason early, whose span is a
// child of the request's span.
func TestEarlyRefresh(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tok := h.srv.IssueToken()
	tok.ExpiresIn = 0 // lifetime unknown: the window is EarlyRefresh
	tok.Expiry = time.Now().Add(time.Hour)
	ts := h.srv.Config().TokenSource(tok)
	ts.EarlyRefresh = 2 * time.Hour
	ts.Observer = h.observer(t)
	ctx, span := h.tp.Tracer("test").Start(context.Background(), "request")
	got, err := ts.TokenContext(ctx)
	span.End()
	if err != nil || got.AccessToken != tok.AccessToken {
		t.Fatalf("%v, %v: want the current token at once", got, err)
	}
	ts.Wait() // for the background refresh
	rm := h.collect(t)
	wantSums(t, rm, "pandadocauth.refreshes", "{refresh}", map[attribute.Set]int64{
		kv("reason", "early", "outcome", "refreshed"): 1,
	})
	spans := h.refreshSpans()
	if len(spans) != 1 {
		t.Fatalf("%d refresh spans, want 1", len(spans))
	}
	if s := spans[0]; s.Parent().SpanID() != span.SpanContext().SpanID() || len(s.Links()) != 0 {
		t.Errorf("parent %v, links %v: want the request's span, no link", s.Parent().SpanID(), s.Links())
	}
}
