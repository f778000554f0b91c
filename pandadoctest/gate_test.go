package pandadoctest_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// postResult is the outcome of a token POST made in the background.
type postResult struct {
	status int
	err    error
}

// postAsync posts form in the background and returns the channel of its
// outcome.
func postAsync(ctx context.Context, srv *pandadoctest.Server, form url.Values) <-chan postResult {
	ch := make(chan postResult, 1)
	go func() {
		resp, err := tokenPost(ctx, srv, form)
		if err != nil {
			ch <- postResult{err: err}
			return
		}
		resp.Body.Close()
		ch <- postResult{status: resp.StatusCode}
	}()
	return ch
}

func TestHoldTokenRequests(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rt := srv.IssueToken().RefreshToken
	ctx := testutil.Context(t)

	srv.HoldTokenRequests()
	srv.HoldTokenRequests() // a second Hold does nothing
	const n = 3
	var results []<-chan postResult
	for range n {
		results = append(results, postAsync(ctx, srv, grantForm("refresh_token", "refresh_token", rt)))
	}
	if err := srv.WaitHeldTokenRequests(ctx, n); err != nil {
		t.Fatal(err)
	}
	if got := srv.HeldTokenRequests(); got != n {
		t.Errorf("HeldTokenRequests() = %d, want %d", got, n)
	}
	if got := srv.TotalTokenRequests(); got != n {
		t.Errorf("TotalTokenRequests() = %d while held, want %d: a request counts when it arrives", got, n)
	}
	for i, ch := range results {
		select {
		case r := <-ch:
			t.Fatalf("request %d answered while held: %+v", i, r)
		default:
		}
	}
	// A fault queued while the requests are held applies to one of
	// them: they take their faults past the gate.
	srv.FailNext(pandadoctest.Status(503))
	srv.ReleaseTokenRequests()
	srv.ReleaseTokenRequests() // a second Release does nothing

	count := map[int]int{}
	for _, ch := range results {
		r := testutil.Recv(t, ch, "a released request")
		if r.err != nil {
			t.Fatal(r.err)
		}
		count[r.status]++
	}
	if count[503] != 1 || count[200] != n-1 {
		t.Errorf("statuses %v, want one 503 and %d×200", count, n-1)
	}
	if got := srv.HeldTokenRequests(); got != 0 {
		t.Errorf("HeldTokenRequests() = %d after release, want 0", got)
	}
	// The gate is open: the next request is not held.
	grant(t, srv, grantForm("refresh_token", "refresh_token", rt))
}

func TestHeldRequestGivesUp(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rt := srv.IssueToken().RefreshToken
	srv.HoldTokenRequests()
	ctx, cancel := context.WithCancel(testutil.Context(t))
	res := postAsync(ctx, srv, grantForm("refresh_token", "refresh_token", rt))
	if err := srv.WaitHeldTokenRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	srv.FailNext(pandadoctest.Status(503))
	cancel()
	if r := testutil.Recv(t, res, "the canceled request"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", r.err)
	}
	srv.ReleaseTokenRequests()
	// The request that gave up at the gate took no fault.
	if got := srv.PendingFaults(); got != 1 {
		t.Errorf("PendingFaults() = %d, want 1", got)
	}
}

func TestCloseReleasesHeldRequests(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} {
		var opts []pandadoctest.Option
		if tls {
			opts = append(opts, pandadoctest.WithTLS())
		}
		srv := pandadoctest.NewServer(opts...)
		rt := srv.IssueToken().RefreshToken
		ctx := testutil.Context(t)
		srv.HoldTokenRequests()
		res := postAsync(ctx, srv, grantForm("refresh_token", "refresh_token", rt))
		if err := srv.WaitHeldTokenRequests(ctx, 1); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		if r := testutil.Recv(t, res, "the held request"); r.err == nil {
			t.Errorf("tls=%v: held request answered %d after Close, want a connection error", tls, r.status)
		}
		if err := srv.WaitTokenRequests(ctx, 2); !errors.Is(err, pandadoctest.ErrClosed) {
			t.Errorf("tls=%v: WaitTokenRequests after Close = %v, want ErrClosed", tls, err)
		}
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, wait := range map[string]func(context.Context, int) error{
		"WaitTokenRequests":     srv.WaitTokenRequests,
		"WaitHeldTokenRequests": srv.WaitHeldTokenRequests,
		"WaitAPIRequests":       srv.WaitAPIRequests,
	} {
		if err := wait(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Errorf("%s = %v, want context.Canceled", name, err)
		}
		if err := wait(ctx, 0); err != nil {
			t.Errorf("%s(0) = %v, want nil: nothing to wait for", name, err)
		}
	}
}

func TestWaitAPIRequests(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	done := make(chan error, 1)
	go func() { done <- srv.WaitAPIRequests(testutil.Context(t), 2) }()
	apiGet(t, srv, "")
	apiGet(t, srv, "Bearer "+srv.IssueToken().AccessToken)
	if err := testutil.Recv(t, done, "WaitAPIRequests"); err != nil {
		t.Fatal(err)
	}
	if srv.APIRequests(http.StatusUnauthorized) != 1 || srv.APIRequests(http.StatusOK) != 1 {
		t.Errorf("APIRequests: 401 %d, 200 %d", srv.APIRequests(401), srv.APIRequests(200))
	}
}

// TestManyGrants checks that grants are counted apart, each along its
// chain of rotated refresh tokens.
func TestManyGrants(t *testing.T) {
	t.Parallel()
	for _, rotation := range []bool{false, true} {
		srv := newServer(t, pandadoctest.WithRotation(rotation))
		const grants = 300
		first := make([]string, grants)
		for i := range first {
			first[i] = srv.IssueToken().RefreshToken
		}
		last := make([]string, grants)
		for i, rt := range first {
			last[i] = rt
			for range i % 3 {
				last[i] = grant(t, srv, grantForm("refresh_token", "refresh_token", last[i])).RefreshToken
			}
		}
		// A rotated-away refresh token is refused, and counted with its
		// grant.
		if rotation {
			grantError(t, srv, grantForm("refresh_token", "refresh_token", first[1]), 400)
		}
		for i := range first {
			want := i % 3
			if rotation && i == 1 {
				want++
			}
			for _, rt := range []string{first[i], last[i]} {
				if got := srv.GrantTokenRequests(rt); got != want {
					t.Fatalf("rotation=%v, grant %d: GrantTokenRequests = %d, want %d", rotation, i, got, want)
				}
			}
			if live, ok := srv.LiveRefreshToken(first[i]); !ok || live != last[i] {
				t.Fatalf("rotation=%v, grant %d: LiveRefreshToken = %q, %v; want the newest", rotation, i, live, ok)
			}
		}
		if rotation == (first[2] == last[2]) {
			t.Errorf("rotation=%v: refresh token of grant 2 rotated: %v", rotation, first[2] != last[2])
		}
		if got := len(srv.RefreshTokens()); got != grants {
			t.Errorf("rotation=%v: %d live refresh tokens, want %d", rotation, got, grants)
		}
		srv.Revoke(last[5])
		if _, ok := srv.LiveRefreshToken(first[5]); ok {
			t.Errorf("rotation=%v: LiveRefreshToken of a revoked grant reports one", rotation)
		}
		if got := srv.GrantTokenRequests("never-issued"); got != 0 {
			t.Errorf("GrantTokenRequests(unknown) = %d", got)
		}
	}
}
