package otelpandadocauth_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// harness is a fake PandaDoc with in-memory metrics and spans.
type harness struct {
	srv    *pandadoctest.Server
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newHarness(t *testing.T, opts ...pandadoctest.Option) *harness {
	t.Helper()
	h := &harness{srv: pandadoctest.NewServer(opts...), reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	h.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	t.Cleanup(func() {
		h.srv.Close()
		h.mp.Shutdown(context.Background())
		h.tp.Shutdown(context.Background())
	})
	return h
}

// observer returns an Observer recording into h.
func (h *harness) observer(t *testing.T, opts ...otelpandadocauth.Option) *pandadocauth.Observer {
	t.Helper()
	opts = append([]otelpandadocauth.Option{otelpandadocauth.WithMeterProvider(h.mp), otelpandadocauth.WithTracerProvider(h.tp)}, opts...)
	obs, err := otelpandadocauth.NewObserver(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

// collect reads every metric recorded so far.
func (h *harness) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// refreshSpans returns the ended refresh spans.
func (h *harness) refreshSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		if s.Name() == "pandadocauth.refresh" {
			out = append(out, s)
		}
	}
	return out
}

// find returns the metric named name, checking its unit and scope.
func find(t *testing.T, rm metricdata.ResourceMetrics, name, unit string) (metricdata.Metrics, bool) {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sm.Scope.Name != otelpandadocauth.ScopeName || sm.Scope.Version != otelpandadocauth.Version() {
				t.Errorf("%s: scope %+v", name, sm.Scope)
			}
			if m.Unit != unit {
				t.Errorf("%s: unit %q, want %q", name, m.Unit, unit)
			}
			return m, true
		}
	}
	return metricdata.Metrics{}, false
}

// kv builds an attribute set from key, value pairs; values are strings,
// or "true"/"false" for the boolean keys.
func kv(pairs ...string) attribute.Set {
	var attrs []attribute.KeyValue
	for i := 0; i+1 < len(pairs); i += 2 {
		k, v := pairs[i], pairs[i+1]
		switch k {
		case "retry", "invalidated":
			attrs = append(attrs, attribute.Bool(k, v == "true"))
		default:
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	return attribute.NewSet(attrs...)
}

// sums returns a counter's values by attribute set, encoded.
func sums(t *testing.T, rm metricdata.ResourceMetrics, name, unit string) map[attribute.Distinct]int64 {
	t.Helper()
	out := map[attribute.Distinct]int64{}
	m, ok := find(t, rm, name, unit)
	if !ok {
		return out
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("%s: %T %+v, want a cumulative monotonic int64 sum", name, m.Data, m.Data)
	}
	for _, dp := range sum.DataPoints {
		out[dp.Attributes.Equivalent()] = dp.Value
	}
	return out
}

// wantSums checks that a counter has exactly the values want.
func wantSums(t *testing.T, rm metricdata.ResourceMetrics, name, unit string, want map[attribute.Set]int64) {
	t.Helper()
	got := sums(t, rm, name, unit)
	if len(got) != len(want) {
		t.Errorf("%s: %d series, want %d: %v", name, len(got), len(want), describe(rm, name))
	}
	for set, v := range want {
		if got[set.Equivalent()] != v {
			t.Errorf("%s{%s} = %d, want %d; all: %v", name, set.Encoded(attribute.DefaultEncoder()), got[set.Equivalent()], v, describe(rm, name))
		}
	}
}

// hist is a histogram data point's count and sum.
type hist struct {
	count uint64
	sum   float64
}

// histograms returns a histogram's points by attribute set.
func histograms(t *testing.T, rm metricdata.ResourceMetrics, name, unit string) map[attribute.Distinct]hist {
	t.Helper()
	out := map[attribute.Distinct]hist{}
	m, ok := find(t, rm, name, unit)
	if !ok {
		return out
	}
	switch d := m.Data.(type) {
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			out[dp.Attributes.Equivalent()] = hist{dp.Count, float64(dp.Sum)}
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			out[dp.Attributes.Equivalent()] = hist{dp.Count, dp.Sum}
		}
	default:
		t.Fatalf("%s: %T, want a histogram", name, m.Data)
	}
	return out
}

// describe lists a metric's points, for failure messages.
func describe(rm metricdata.ResourceMetrics, name string) []string {
	var out []string
	enc := attribute.DefaultEncoder()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, dp.Attributes.Encoded(enc)+"="+itoa(dp.Value))
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, dp.Attributes.Encoded(enc)+" count="+itoa(int64(dp.Count)))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, dp.Attributes.Encoded(enc)+" count="+itoa(int64(dp.Count)))
				}
			}
		}
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// gauge returns the expiry gauge's points by attribute set.
func gauge(t *testing.T, rm metricdata.ResourceMetrics) map[attribute.Distinct]float64 {
	t.Helper()
	out := map[attribute.Distinct]float64{}
	m, ok := find(t, rm, "pandadocauth.token.time_to_expiry", "s")
	if !ok {
		return out
	}
	g, ok := m.Data.(metricdata.Gauge[float64])
	if !ok {
		t.Fatalf("%T, want a float64 gauge", m.Data)
	}
	for _, dp := range g.DataPoints {
		out[dp.Attributes.Equivalent()] = dp.Value
	}
	return out
}

// assertNoSecret fails if any metric attribute, span attribute, event,
// link or status of h contains one of secrets.
func (h *harness) assertNoSecret(t *testing.T, rm metricdata.ResourceMetrics, secrets ...string) {
	t.Helper()
	var texts []string
	addSet := func(s attribute.Set) {
		for _, a := range s.ToSlice() {
			texts = append(texts, string(a.Key)+"="+a.Value.Emit())
		}
	}
	addKV := func(kvs []attribute.KeyValue) { addSet(attribute.NewSet(kvs...)) }
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					addSet(dp.Attributes)
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					addSet(dp.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					addSet(dp.Attributes)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					addSet(dp.Attributes)
				}
			}
		}
	}
	for _, s := range h.spans.Ended() {
		texts = append(texts, s.Name(), s.Status().Description)
		addKV(s.Attributes())
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
			addKV(e.Attributes)
		}
		for _, l := range s.Links() {
			addKV(l.Attributes)
		}
	}
	for _, text := range texts {
		for _, secret := range secrets {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("a secret in %q", text)
			}
		}
	}
}

// gate is a RoundTripper that holds every request until open is closed,
// and records the span context each request was sent in.
type gate struct {
	base http.RoundTripper
	open chan struct{}
	sent chan trace.SpanContext // buffered
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-g.open:
	case <-req.Context().Done():
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, req.Context().Err()
	}
	select {
	case g.sent <- trace.SpanContextFromContext(req.Context()):
	default:
	}
	return g.base.RoundTrip(req)
}
