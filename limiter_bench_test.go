package pandadocauth_test

// Benchmarks of the Limiter, side by side with the least a transport can
// do for the same work, in one process. BENCHMARKS.md has the command
// and the results. As in benchmark_test.go, the contenders are
// sub-benchmarks named impl=…, figures are reported with b.ReportMetric
// and never asserted; a benchmark fails only when its harness breaks.
//
//	BenchmarkLimiterHotPath    one request that never waits: the limit
//	                           transport alone, and a Limiter in front
//	                           of it
//	BenchmarkLimiterThroughput 1,500 creates from a template against a
//	                           fake PandaDoc limited to 500 per window
//	BenchmarkLimiterIdle       heap retained per grant, idle for a window
//	                           after one request each

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// BenchmarkLimiterHotPath is one request that never waits, through the
// limit transport (benchmark_test.go: one Clone, one Header.Set) to an
// API that costs nothing, with and without a Limiter in front: what the
// Limiter costs a request. The request lists documents
// (ClassListStatusDelete) for a grant named in its context, with 1 or
// 10 headers of its own (callerHeaders, less Idempotency-Key, which the
// Limiter would drop with a Clone of its own). The Limiter's limit for
// the class is lifted and its window is 1 ms, so that it logs every
// request, never makes one wait, and keeps its log at the steady size
// of a millisecond of traffic instead of growing for the whole run.
func BenchmarkLimiterHotPath(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		for _, n := range []int{1, 10} {
			for _, impl := range []string{"limit", "limiter"} {
				b.Run(fmt.Sprintf("%s/headers=%d/impl=%s", mode, n, impl), func(b *testing.B) {
					req, err := http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), "ws"), http.MethodGet, benchAPIURL, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, h := range callerHeaders {
						if len(req.Header) < n && h[0] != "Idempotency-Key" {
							req.Header.Set(h[0], h[1])
						}
					}
					check := &headerCheck{next: newNopTransport()}
					lt := &limitTransport{base: check}
					h := "Bearer at-0"
					lt.header.Store(&h)
					var rt http.RoundTripper = lt
					if impl == "limiter" {
						rt = &pandadocauth.Limiter{Base: lt, Limits: pandadocauth.Limits{ListStatusDelete: -1}, Window: time.Millisecond, Margin: -1}
					}
					if _, err := rt.RoundTrip(req); err != nil || check.got != h {
						b.Fatalf("harness: %v, Authorization %q", err, check.got)
					}
					lt.base = newNopTransport()
					b.ReportAllocs()
					b.ResetTimer()
					if mode == "serial" {
						for i := 0; i < b.N; i++ {
							if _, err := rt.RoundTrip(req); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := rt.RoundTrip(req); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}

// benchCreates is the size of the throughput scenario: creates, and the
// fake's limit per window.
const (
	benchCreates = 1500
	benchLimit   = 500
	benchWindow  = 5 * time.Second
	benchWorkers = 64
)

// BenchmarkLimiterThroughput: 1,500 creates from a template, from 64
// goroutines, against pandadoctest limited to 500 per window (PandaDoc's
// 500 a minute, the window shortened to 5 s) over loopback HTTP, with
// the Limiter's defaults but the window (its Margin is then Window/60,
// 83 ms: the delay between a slot and the request's arrival stays under
// it even on a busy machine, which a shorter window's does not).
// The workers' connections are opened before the clock starts, as a
// client's pool would be.
// Each iteration is the whole scenario against a fresh fake. The least
// time the limit allows is two windows (500 at once, 500 a window later,
// 500 two windows later): the benchmark reports time/least, the 429s
// the fake answered, and the 429s that reached the caller.
func BenchmarkLimiterThroughput(b *testing.B) {
	b.Run("impl=limiter", func(b *testing.B) {
		var total time.Duration
		var met, returned int
		for i := 0; i < b.N; i++ {
			d, m, r := throughputScenario(b)
			total += d
			met += m
			returned += r
		}
		least := 2 * benchWindow
		b.ReportMetric(float64(total)/float64(b.N)/float64(least), "time/least")
		b.ReportMetric(float64(met)/float64(b.N), "429s-met/op")
		b.ReportMetric(float64(returned)/float64(b.N), "429s-returned/op")
	})
}

// throughputScenario runs the creates once, and returns the time they
// took, the 429s the fake answered and the 429s the caller got.
func throughputScenario(b *testing.B) (time.Duration, int, int) {
	b.StopTimer()
	srv := pandadoctest.NewServer(pandadoctest.WithAPIKey("bench-key"),
		pandadoctest.WithRateLimits(pandadocauth.Limits{CreateFromTemplate: benchLimit}), pandadoctest.WithRateWindow(benchWindow))
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: benchWorkers}
	defer tr.CloseIdleConnections()
	lim := &pandadocauth.Limiter{Base: tr, Window: benchWindow}
	rt := &pandadocauth.APIKeyTransport{Key: "bench-key", Base: lim}
	bodies := make([]string, benchCreates)
	for i := range bodies {
		bodies[i] = fmt.Sprintf(`{"name":"doc %d","template_uuid":"tpl-1"}`, i)
	}
	var next, returned atomic.Int64
	var wg sync.WaitGroup
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/public/v1/templates", nil)
			if resp, err := rt.RoundTrip(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	b.StartTimer()
	t0 := time.Now()
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= benchCreates {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/public/v1/documents", strings.NewReader(bodies[i]))
				req.Header.Set("Content-Type", "application/json")
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusCreated:
				case http.StatusTooManyRequests:
					returned.Add(1)
				default:
					b.Errorf("harness: a create answered %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	b.StopTimer()
	if n := srv.APIRequests(http.StatusCreated); n != benchCreates {
		b.Fatalf("harness: %d documents, want %d", n, benchCreates)
	}
	met := srv.Throttled(pandadocauth.ClassCreateFromTemplate)
	b.StartTimer()
	return d, met, int(returned.Load())
}

// BenchmarkLimiterIdle: 100,000 grants send one request each through one
// Limiter; a window later (on a fake clock), one more request lets the
// Limiter drop what the idle grants left. It reports the heap retained
// per idle grant, measured with runtime.ReadMemStats after collections,
// against the heap before the first request, and the heap per grant
// while they were in the window, for scale.
func BenchmarkLimiterIdle(b *testing.B) {
	const grants = 100_000
	b.Run("impl=limiter", func(b *testing.B) {
		var idle, busy float64
		for i := 0; i < b.N; i++ {
			reqs := make([]*http.Request, grants)
			for j := range reqs {
				reqs[j], _ = http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), fmt.Sprintf("workspace-%d", j)), http.MethodGet, benchAPIURL, nil)
			}
			clk := pandadocauth.NewFakeClock()
			lim := &pandadocauth.Limiter{Base: newNopTransport()}
			pandadocauth.SetLimiterClock(lim, clk)
			before := benchHeap()
			for _, req := range reqs {
				if _, err := lim.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
			during := benchHeap()
			clk.Advance(2 * time.Minute)
			if _, err := lim.RoundTrip(reqs[0]); err != nil {
				b.Fatal(err)
			}
			after := benchHeap()
			runtime.KeepAlive(reqs)
			runtime.KeepAlive(lim)
			if during <= before {
				b.Fatalf("harness: the grants' state did not show on the heap (%d -> %d)", before, during)
			}
			busy += float64(during-before) / grants
			idle += float64(after-before) / grants
		}
		b.ReportMetric(idle/float64(b.N), "B/idle-grant")
		b.ReportMetric(busy/float64(b.N), "B/grant-in-window")
	})
}

// benchHeap returns the live heap after collections.
func benchHeap() int64 {
	for range 3 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
