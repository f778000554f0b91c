package otelpandadocauth_test

import (
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"go.opentelemetry.io/otel/attribute"
)

// grants is a Ranger of named sources, in the order of keys.
type grants struct {
	keys []string
	srcs map[string]*pandadocauth.TokenSource
}

func (g grants) Range(f func(string, *pandadocauth.TokenSource) bool) {
	for _, k := range g.keys {
		if !f(k, g.srcs[k]) {
			return
		}
	}
}

// expirySources returns, on a server whose clock is now: a source whose
// token expires in a year, one whose token expires in 600 seconds, one
// whose token has no expiry, and one never used. All but the last have
// served their token.
func expirySources(t *testing.T, now time.Time) (h *harness, year, short, noExpiry, unused *pandadocauth.TokenSource) {
	t.Helper()
	h = newHarness(t, pandadoctest.WithClock(func() time.Time { return now }))
	cfg := h.srv.Config()
	year = cfg.TokenSource(h.srv.IssueToken())
	h.srv.SetExpiresIn(600)
	short = cfg.TokenSource(h.srv.IssueToken())
	tok := h.srv.IssueToken()
	tok.Expiry = time.Time{}
	noExpiry = cfg.TokenSource(tok)
	unused = cfg.TokenSource(h.srv.IssueToken())
	for _, ts := range []*pandadocauth.TokenSource{year, short, noExpiry} {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	}
	return h, year, short, noExpiry, unused
}

// TestObserveExpiry: the gauge is the time left until each grant's token
// expires, the smallest of those with the same attributes, with no
// point for tokens without expiry or sources not used yet.
func TestObserveExpiry(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Second)
	_, year, short, noExpiry, unused := expirySources(t, now)
	all := grants{
		keys: []string{"year", "short", "none", "unused", "nil"},
		srcs: map[string]*pandadocauth.TokenSource{"year": year, "short": short, "none": noExpiry, "unused": unused},
	}
	clock := func() time.Time { return now }
	cases := []struct {
		name  string
		r     otelpandadocauth.Ranger
		grant bool
		want  map[attribute.Set]float64
	}{
		{"sources", otelpandadocauth.Sources{year, nil, short, noExpiry, unused}, false, map[attribute.Set]float64{
			attribute.NewSet(): 600,
		}},
		{"sources with grant attribute", otelpandadocauth.Sources{year, short}, true, map[attribute.Set]float64{
			attribute.NewSet(): 600,
		}},
		{"grants", all, false, map[attribute.Set]float64{
			attribute.NewSet(): 600,
		}},
		{"grants with grant attribute", all, true, map[attribute.Set]float64{
			kv("grant", "year"):  pandadoctest.DefaultExpiresIn,
			kv("grant", "short"): 600,
		}},
		{"one year", otelpandadocauth.Sources{year}, false, map[attribute.Set]float64{
			attribute.NewSet(): pandadoctest.DefaultExpiresIn,
		}},
		{"none", otelpandadocauth.Sources{noExpiry, unused}, false, map[attribute.Set]float64{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hh := newHarness(t) // a reader of its own
			opts := []otelpandadocauth.Option{otelpandadocauth.WithMeterProvider(hh.mp)}
			if tc.grant {
				opts = append(opts, otelpandadocauth.WithGrantAttribute())
			}
			reg, err := otelpandadocauth.ObserveExpiryAt(tc.r, clock, opts...)
			if err != nil {
				t.Fatal(err)
			}
			got := gauge(t, hh.collect(t))
			if len(got) != len(tc.want) {
				t.Errorf("%d points, want %d: %v", len(got), len(tc.want), got)
			}
			for set, v := range tc.want {
				if got[set.Equivalent()] != v {
					t.Errorf("{%s} = %v, want %v", set.Encoded(attribute.DefaultEncoder()), got[set.Equivalent()], v)
				}
			}
			if err := reg.Unregister(); err != nil {
				t.Fatal(err)
			}
			if got := gauge(t, hh.collect(t)); len(got) != 0 {
				t.Errorf("after Unregister: %v", got)
			}
		})
	}
}

// TestObserveExpiryNow: ObserveExpiry reads the wall clock at each
// collection; the value lies between the time left before and after it.
func TestObserveExpiryNow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ts := h.srv.Config().TokenSource(h.srv.IssueToken())
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	reg, err := otelpandadocauth.ObserveExpiry(otelpandadocauth.Sources{ts}, otelpandadocauth.WithMeterProvider(h.mp))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	exp := ts.Expiry()
	before := time.Now()
	got := gauge(t, h.collect(t))
	after := time.Now()
	empty := attribute.NewSet()
	v, ok := got[empty.Equivalent()]
	if len(got) != 1 || !ok {
		t.Fatalf("points %v, want one without attributes", got)
	}
	if lo, hi := exp.Sub(after).Seconds(), exp.Sub(before).Seconds(); v < lo || v > hi {
		t.Errorf("%v seconds left, want within [%v, %v]", v, lo, hi)
	}
}

// TestObserveExpiryNil: no sources is an error.
func TestObserveExpiryNil(t *testing.T) {
	t.Parallel()
	if _, err := otelpandadocauth.ObserveExpiry(nil); err == nil || err.Error() != "otelpandadocauth: ObserveExpiry: no sources" {
		t.Errorf("error %v", err)
	}
}

// TestSourcesRange: Range skips nil sources and stops when f says so.
func TestSourcesRange(t *testing.T) {
	t.Parallel()
	a, b := &pandadocauth.TokenSource{}, &pandadocauth.TokenSource{}
	var seen []*pandadocauth.TokenSource
	otelpandadocauth.Sources{a, nil, b}.Range(func(grant string, s *pandadocauth.TokenSource) bool {
		if grant != "" {
			t.Errorf("grant %q", grant)
		}
		seen = append(seen, s)
		return true
	})
	if len(seen) != 2 || seen[0] != a || seen[1] != b {
		t.Errorf("ranged over %v", seen)
	}
	n := 0
	otelpandadocauth.Sources{a, b}.Range(func(string, *pandadocauth.TokenSource) bool { n++; return false })
	if n != 1 {
		t.Errorf("%d calls after false, want 1", n)
	}
}
