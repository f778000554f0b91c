package otelpandadocauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// upDown returns an up-down counter's values by attribute set.
func upDown(t *testing.T, rm metricdata.ResourceMetrics, name, unit string) map[attribute.Distinct]int64 {
	t.Helper()
	out := map[attribute.Distinct]int64{}
	m, ok := find(t, rm, name, unit)
	if !ok {
		t.Fatalf("%s not recorded", name)
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || sum.IsMonotonic {
		t.Fatalf("%s: %T %+v, want a non-monotonic int64 sum", name, m.Data, m.Data)
	}
	for _, dp := range sum.DataPoints {
		out[dp.Attributes.Equivalent()] = dp.Value
	}
	return out
}

// key is s's map key.
func key(s attribute.Set) attribute.Distinct { return s.Equivalent() }

// TestLimiterMetrics: a Limiter's waits, 429s and retries become the
// metrics of the package documentation, by class, without the grant
// even when grants are wanted as attributes.
func TestLimiterMetrics(t *testing.T) {
	h := newHarness(t, pandadoctest.WithAPIKey("key-1"),
		pandadoctest.WithRateLimits(pandadocauth.Limits{ListStatusDelete: 1}))
	obs := h.observer(t, otelpandadocauth.WithGrantAttribute())
	// A wait the test ends at once: its context is canceled as soon as
	// it starts, so the test never waits.
	ctx, cancel := context.WithCancel(pandadocauth.WithGrant(context.Background(), "acme"))
	defer cancel()
	limitWait := obs.LimitWait
	obs.LimitWait = func(c context.Context, info pandadocauth.LimitWaitInfo) {
		limitWait(c, info)
		if info.Class != pandadocauth.ClassListStatusDelete {
			return
		}
		rm := h.collect(t)
		if q := upDown(t, rm, "pandadocauth.ratelimit.queued", "{request}"); q[key(kv("class", "list_status_delete"))] != 1 {
			t.Errorf("queued while waiting = %v, want 1", describe(rm, "pandadocauth.ratelimit.queued"))
		}
		cancel()
	}
	lim := &pandadocauth.Limiter{Base: h.srv.Client().Transport, Observer: obs,
		Limits: pandadocauth.Limits{ListStatusDelete: 5}}
	rt := &pandadocauth.APIKeyTransport{Key: "key-1", Base: lim}
	get := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/public/v1/documents", nil)
		return rt.RoundTrip(req)
	}
	// The first is accepted; the second meets the fake's 429, whose
	// hint (a minute) is past its deadline: returned, not retried.
	resp, err := get(pandadocauth.WithGrant(context.Background(), "acme"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	short, cancelShort := context.WithTimeout(pandadocauth.WithGrant(context.Background(), "acme"), 10*time.Second)
	defer cancelShort()
	if resp, err = get(short); err != nil || resp.StatusCode != 429 {
		t.Fatalf("%v, %v; want the 429", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The third waits for the class (the 429's hint), and is canceled.
	var rle *pandadocauth.RateLimitError
	if _, err = get(ctx); !errors.As(err, &rle) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a canceled wait", err)
	}
	// A retried 429 and a retry of a 5xx, as a Limiter reports them.
	obs.Throttled(context.Background(), pandadocauth.ThrottledInfo{Grant: "acme", Class: pandadocauth.ClassSend, Hint: time.Second, HintSource: pandadocauth.HintRetryAfter, Retried: true})
	obs.Retried(context.Background(), pandadocauth.RetriedInfo{Grant: "acme", Class: pandadocauth.ClassSend, Attempt: 2, Reason: pandadocauth.RetryThrottled, Status: 429})
	obs.Retried(context.Background(), pandadocauth.RetriedInfo{Grant: "acme", Class: pandadocauth.ClassDetails, Attempt: 2, Reason: pandadocauth.RetryStatus, Status: 503})
	obs.LimitWait(context.Background(), pandadocauth.LimitWaitInfo{Grant: "acme", Class: pandadocauth.ClassSend, Wait: 2 * time.Second, Attempt: 2})
	obs.LimitWaited(context.Background(), pandadocauth.LimitWaitedInfo{Grant: "acme", Class: pandadocauth.ClassSend, Wait: 2 * time.Second, Waited: 2 * time.Second, Attempt: 2})

	rm := h.collect(t)
	wantThrottled := map[attribute.Set]int64{
		attribute.NewSet(attribute.String("class", "list_status_delete"), attribute.String("hint_source", "body"), attribute.Bool("retried", false)): 1,
		attribute.NewSet(attribute.String("class", "send"), attribute.String("hint_source", "retry_after"), attribute.Bool("retried", true)):         1,
	}
	wantSums(t, rm, "pandadocauth.ratelimit.throttled", "{response}", wantThrottled)
	wantSums(t, rm, "pandadocauth.retries", "{retry}", map[attribute.Set]int64{
		kv("class", "send", "reason", "throttled"): 1,
		kv("class", "details", "reason", "status"): 1,
	})
	q := upDown(t, rm, "pandadocauth.ratelimit.queued", "{request}")
	for _, c := range []string{"list_status_delete", "send"} {
		if v, ok := q[key(kv("class", c))]; !ok || v != 0 {
			t.Errorf("queued{class=%s} = %d (recorded %v), want 0 after the waits", c, v, ok)
		}
	}
	waits := histograms(t, rm, "pandadocauth.ratelimit.wait", "s")
	if w := waits[key(kv("class", "list_status_delete", "outcome", "canceled"))]; w.count != 1 {
		t.Errorf("wait{list_status_delete, canceled} = %+v, want 1 point; all: %v", w, describe(rm, "pandadocauth.ratelimit.wait"))
	}
	if w := waits[key(kv("class", "send", "outcome", "sent"))]; w.count != 1 || w.sum != 2 {
		t.Errorf("wait{send, sent} = %+v, want one of 2 s", w)
	}
	for _, name := range []string{"pandadocauth.ratelimit.throttled", "pandadocauth.retries", "pandadocauth.ratelimit.queued", "pandadocauth.ratelimit.wait"} {
		for _, d := range describe(rm, name) {
			if strings.Contains(d, "acme") || strings.Contains(d, "grant") {
				t.Errorf("%s carries the grant: %s", name, d)
			}
		}
	}
}
