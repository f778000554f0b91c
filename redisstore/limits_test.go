package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// testLimits returns a Limits whose Prefix no other test uses; its keys
// are deleted at the end.
func testLimits(t testing.TB, rdb *redis.Client) *Limits {
	t.Helper()
	l := &Limits{Client: rdb, Prefix: randomName("pandadocauth-test-") + ":"}
	t.Cleanup(func() {
		ctx := context.Background()
		keys, err := rdb.Keys(ctx, l.Prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return l
}

// op is a LimitOp of grant "acme", class create_from_template.
func op(limit int, window, maxWait time.Duration) pandadocauth.LimitOp {
	return pandadocauth.LimitOp{Key: "acme", Class: pandadocauth.ClassCreateFromTemplate, Limit: limit, Window: window, MaxWait: maxWait}
}

const forever = 365 * 24 * time.Hour

// about checks that a wait measured on Redis's clock is want less the
// time the test has taken since (at most a second, even on a busy
// machine).
func about(t *testing.T, what string, got, want time.Duration) {
	t.Helper()
	if got > want || got < want-time.Second {
		t.Errorf("%s: wait %v, want %v less the time elapsed", what, got, want)
	}
}

// TestLimitsReserve: the sliding log on Redis: a burst up to the limit
// at once, then slots a window after the ones they follow, first come
// first served; a slot past MaxWait is not taken, and one given back
// goes to the next request.
func TestLimitsReserve(t *testing.T) {
	t.Parallel()
	l := testLimits(t, testClient(t))
	ctx := context.Background()
	const w = 10 * time.Second
	reserve := func(maxWait time.Duration) pandadocauth.LimitSlot {
		t.Helper()
		s, err := l.Reserve(ctx, op(3, w, maxWait))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for i := range 3 {
		if s := reserve(forever); !s.OK || s.Wait != 0 || s.ID == 0 {
			t.Fatalf("burst %d: %+v, want a slot now", i, s)
		}
	}
	if s := reserve(time.Second); s.OK {
		t.Fatalf("past MaxWait: %+v, want no slot", s)
	} else {
		about(t, "refused", s.Wait, w)
	}
	for i := range 3 {
		s := reserve(forever)
		if !s.OK {
			t.Fatalf("second window %d: %+v", i, s)
		}
		about(t, "second window", s.Wait, w) // the refused one took none
	}
	if s := reserve(forever); !s.OK {
		t.Fatal(s)
	} else {
		about(t, "third window", s.Wait, 2*w)
		// Give it back: the next one takes its slot.
		o := op(3, w, forever)
		o.Reported = pandadocauth.LimitReport{Slot: s.ID, Outcome: pandadocauth.SlotUnused}
		if err := l.Report(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if s := reserve(forever); !s.OK {
		t.Fatal(s)
	} else {
		about(t, "after the slot given back", s.Wait, 2*w)
	}
}

// TestLimitsThrottledShared: a 429 one replica reports holds the (key,
// class) back in every replica, and lowers their limit to what PandaDoc
// accepted.
func TestLimitsThrottledShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const w = 10 * time.Second
	for _, tt := range []struct {
		name     string
		accepted int // slots PandaDoc accepted before the 429
		hint     time.Duration
		want     time.Duration
	}{
		// Other apps of the user took the quota: PandaDoc's hint rules.
		{name: "hint", hint: 5 * time.Second, want: 5 * time.Second},
		{name: "hint past the window", hint: time.Hour, want: w},
		// PandaDoc accepted 2: the limit learned is 2, the next slot
		// when the first of them leaves the window.
		{name: "no hint: the limit learned", accepted: 2, want: w},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testLimits(t, testClient(t))
			b := &Limits{Client: testClient(t), Prefix: a.Prefix} // another replica
			var slots []pandadocauth.LimitSlot
			for range tt.accepted + 1 {
				s, err := a.Reserve(ctx, op(10, w, forever))
				if err != nil || !s.OK || s.Wait != 0 {
					t.Fatal(s, err)
				}
				slots = append(slots, s)
			}
			// The last was answered 429 and is not retried.
			o := op(10, w, forever)
			o.Reported = pandadocauth.LimitReport{Slot: slots[len(slots)-1].ID, Outcome: pandadocauth.SlotThrottled, Hint: tt.hint}
			if err := a.Report(ctx, o); err != nil {
				t.Fatal(err)
			}
			s, err := b.Reserve(ctx, op(10, w, forever))
			if err != nil || !s.OK {
				t.Fatal(s, err)
			}
			about(t, "the other replica", s.Wait, tt.want)
		})
	}
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int32 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int32(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestLimitsOneRoundTrip: a reservation, its report included, is one
// command; the keys live under the grant's hash tag and expire.
func TestLimitsOneRoundTrip(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	hook := &countingHook{}
	rdb.AddHook(hook)
	l := testLimits(t, rdb)
	ctx := context.Background()
	s, err := l.Reserve(ctx, op(5, time.Minute, forever)) // loads the script
	if err != nil || !s.OK {
		t.Fatal(s, err)
	}
	before := hook.n.Load()
	o := op(5, time.Minute, forever)
	o.Reported = pandadocauth.LimitReport{Slot: s.ID, Outcome: pandadocauth.SlotThrottled, Hint: 2 * time.Second}
	if s, err = l.Reserve(ctx, o); err != nil || !s.OK {
		t.Fatal(s, err)
	}
	if n := hook.n.Load() - before; n != 1 {
		t.Errorf("a reservation with its report took %d commands, want 1", n)
	}
	logKey := l.Prefix + "{acme}:rl:create_from_template"
	for _, k := range []string{logKey, logKey + ":m"} {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > 10*time.Minute {
			t.Errorf("PTTL %s = %v, %v; want it to expire within ten windows", k, ttl, err)
		}
	}
	if n, _ := rdb.ZCard(ctx, logKey).Result(); n != 1 {
		t.Errorf("the log holds %d slots, want 1: the throttled one removed, the retry's added", n)
	}
	// A key that is no hash tag gets the Store's hashed one.
	log, meta, err := l.keys("a{b}", pandadocauth.ClassSend)
	if err != nil || !strings.Contains(log, "{sha256:") || !strings.HasSuffix(log, ":rl:send") || meta != log+":m" {
		t.Errorf("keys of a{b} = %q, %q, %v", log, meta, err)
	}
	if _, _, err := (&Limits{Client: rdb, Prefix: "x{"}).keys("a", pandadocauth.ClassSend); err == nil {
		t.Error("a Prefix with a brace was accepted")
	}
	if _, err := (&Limits{}).Reserve(ctx, op(1, time.Minute, forever)); err == nil {
		t.Error("a Limits without Client reserved")
	}
}

// createReq returns a create from template, replayable.
func createReq(url string, i int) *http.Request {
	body := fmt.Sprintf(`{"name":"doc %d","template_uuid":"tpl-1"}`, i)
	req, _ := http.NewRequest(http.MethodPost, url+"/public/v1/documents", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

// The fleet test's sizes: the fake's limit and window, and the creates
// each replica sends at once.
const (
	fleetLimit   = 4
	fleetWindow  = 300 * time.Millisecond
	fleetCreates = 10
)

// limitsWorkerEnv carries a replica's configuration (JSON) to the
// re-executed test binary.
const limitsWorkerEnv = "PANDADOCAUTH_LIMITS_WORKER"

// limitsWorker is what a replica process is told.
type limitsWorker struct {
	URL    string // the fake PandaDoc
	Prefix string // of the shared Limits; "" for limits of its own
	First  int    // the number of its first create
}

// newReplica returns the Limiter of one replica, sharing prefix in Redis
// or, without one, in its process.
func newReplica(t *testing.T, prefix string) *pandadocauth.Limiter {
	lim := &pandadocauth.Limiter{
		Limits: pandadocauth.Limits{CreateFromTemplate: fleetLimit},
		Window: fleetWindow,
		Margin: fleetWindow,
	}
	if prefix != "" {
		lim.Store = &Limits{Client: testClient(t), Prefix: prefix}
	}
	return lim
}

// sendCreates sends fleetCreates creates at once through lim and
// returns their statuses.
func sendCreates(t *testing.T, lim *pandadocauth.Limiter, url string, first int) []int {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	lim.Base = tr
	rt := &pandadocauth.APIKeyTransport{Key: "key-1", Base: lim}
	var wg sync.WaitGroup
	statuses := make([]int, fleetCreates)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := rt.RoundTrip(createReq(url, first+i))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	return statuses
}

// TestLimitsFleet: two replicas, each a process of its own with a Redis
// client of its own and a Limiter sharing one Limits, send 10 creates
// each at once against the fake PandaDoc's throttle: together they never
// exceed its limit in any window, by the fake's counter, and meet no
// 429. Without the shared store they would: the control run, two
// Limiters of their own, sends twice the limit at once.
//
// Redis's clock is the only clock here, so the test runs in real time:
// a window of 300 ms, and a Margin as long, which covers any delay up to
// 300 ms between a slot and the request's arrival.
func TestLimitsFleet(t *testing.T) {
	t.Parallel()
	testClient(t) // skips without Redis
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			t.Parallel()
			srv := pandadoctest.NewServer(pandadoctest.WithAPIKey("key-1"),
				pandadoctest.WithRateLimits(pandadocauth.Limits{CreateFromTemplate: fleetLimit}), pandadoctest.WithRateWindow(fleetWindow))
			defer srv.Close()
			if shared {
				prefix := testLimits(t, testClient(t)).Prefix
				var procs []*exec.Cmd
				var outs []*strings.Builder
				for r := range 2 {
					cfg, _ := json.Marshal(limitsWorker{URL: srv.URL, Prefix: prefix, First: r * fleetCreates})
					cmd := exec.Command(os.Args[0], "-test.run=^TestLimitsFleetWorker$", "-test.count=1", "-test.v")
					cmd.Env = append(os.Environ(), limitsWorkerEnv+"="+string(cfg))
					out := &strings.Builder{}
					cmd.Stdout, cmd.Stderr = out, out
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					procs, outs = append(procs, cmd), append(outs, out)
				}
				for i, cmd := range procs {
					if err := cmd.Wait(); err != nil || !strings.Contains(outs[i].String(), "--- PASS: TestLimitsFleetWorker") {
						t.Errorf("replica %d: %v\n%s", i, err, outs[i].String())
					}
				}
			} else {
				var wg sync.WaitGroup
				for r := range 2 {
					lim := newReplica(t, "")
					wg.Add(1)
					go func() {
						defer wg.Done()
						for _, s := range sendCreates(t, lim, srv.URL, r*fleetCreates) {
							if s != http.StatusCreated && s != http.StatusTooManyRequests {
								t.Errorf("a create answered %d", s)
							}
						}
					}()
				}
				wg.Wait()
			}
			most := srv.MaxInWindow(pandadocauth.ClassCreateFromTemplate)
			t.Logf("most creates in a window: %d (limit %d), 429s: %d", most, fleetLimit, srv.Throttled(pandadocauth.ClassCreateFromTemplate))
			if !shared {
				if most <= fleetLimit {
					t.Errorf("without the shared store: %d in a window; the control should exceed %d", most, fleetLimit)
				}
				return
			}
			if most > fleetLimit {
				t.Errorf("%d creates arrived in one window, limit %d", most, fleetLimit)
			}
			if n := srv.Throttled(pandadocauth.ClassCreateFromTemplate); n != 0 {
				t.Errorf("%d 429s, want none", n)
			}
			if n := srv.APIRequests(http.StatusCreated); n != 2*fleetCreates {
				t.Errorf("%d documents, want %d", n, 2*fleetCreates)
			}
		})
	}
}

// TestLimitsFleetWorker is one replica of TestLimitsFleet, in a process
// of its own: it sends its creates and checks every one was created.
func TestLimitsFleetWorker(t *testing.T) {
	raw := os.Getenv(limitsWorkerEnv)
	if raw == "" {
		t.Skip("a replica of TestLimitsFleet, run by it")
	}
	var cfg limitsWorker
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	for i, s := range sendCreates(t, newReplica(t, cfg.Prefix), cfg.URL, cfg.First) {
		if s != http.StatusCreated {
			t.Errorf("create %d answered %d", cfg.First+i, s)
		}
	}
}

// TestLimitsRedisDown: with Redis unreachable, the Limiter limits in its
// process, no request fails, and it logs once.
func TestLimitsRedisDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaintNotificationsConfig: noMaint, MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	srv := pandadoctest.NewServer(pandadoctest.WithAPIKey("key-1"))
	defer srv.Close()
	logger, logs := testutil.NewLogger()
	lim := &pandadocauth.Limiter{Base: srv.Client().Transport, Store: &Limits{Client: rdb}, Logger: logger,
		Limits: pandadocauth.Limits{CreateFromTemplate: 3}, MaxWait: time.Nanosecond}
	rt := &pandadocauth.APIKeyTransport{Key: "key-1", Base: lim}
	for i := range 3 {
		resp, err := rt.RoundTrip(createReq(srv.URL, i))
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("create %d: %v, %v", i, resp, err)
		}
		resp.Body.Close()
	}
	if _, err := rt.RoundTrip(createReq(srv.URL, 3)); !strings.Contains(fmt.Sprint(err), "client-side") {
		t.Errorf("fourth create: %v; want the in-process limit", err)
	}
	if n := strings.Count(logs.String(), "Limiter.Store failed"); n != 1 {
		t.Errorf("logged %d times, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "key-1") {
		t.Errorf("the log leaks the API key: %s", logs.String())
	}
}
