package fakepandadoc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

const tokenURL = "https://api.pandadoc.com/oauth2/access_token"

// numbered names tokens "<grant>-<kind>-<n>".
func numbered(kind fakepandadoc.TokenKind, grant string, n int) string {
	return fmt.Sprintf("%s-%s-%d", grant, kind, n)
}

func newServer(t *testing.T, o fakepandadoc.Options) *fakepandadoc.Server {
	t.Helper()
	o.ClientID, o.ClientSecret = "id", "secret"
	srv := fakepandadoc.New(o)
	t.Cleanup(srv.Close)
	return srv
}

// refreshReq returns a refresh_token POST for rt with the right
// credentials.
func refreshReq(ctx context.Context, rt string) *http.Request {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"id"}, "client_secret": {"secret"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return req
}

// answer is a token endpoint's JSON answer.
type answer struct {
	AccessToken  string  `json:"access_token"`
	RefreshToken *string `json:"refresh_token"`
	Error        string  `json:"error"`
}

func refresh(t *testing.T, srv *fakepandadoc.Server, rt string) (int, answer) {
	t.Helper()
	resp, err := srv.RoundTrip(refreshReq(context.Background(), rt))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, a
}

// TestNamedTokensAndRotation: AddGrant's grant refreshes in memory with
// tokens named by TokenName, numbered from the issue after AddGrant's;
// rotation refuses the rotated-away token, and Rotate acts as another
// client without counting a POST.
func TestNamedTokensAndRotation(t *testing.T) {
	srv := newServer(t, fakepandadoc.Options{ExpiresIn: 60, Rotation: true, TokenName: numbered})
	if !srv.AddGrant("g", "g-rt-4", 4) {
		t.Fatal("AddGrant refused a new refresh token")
	}
	if srv.AddGrant("h", "g-rt-4", 0) {
		t.Error("AddGrant took a refresh token that is taken")
	}
	status, a := refresh(t, srv, "g-rt-4")
	if status != 200 || a.AccessToken != "g-at-5" || a.RefreshToken == nil || *a.RefreshToken != "g-rt-5" {
		t.Fatalf("%d %+v, want g-at-5 and g-rt-5", status, a)
	}
	if status, a := refresh(t, srv, "g-rt-4"); status != 400 || a.Error != "invalid_grant" {
		t.Errorf("the rotated-away token: %d %+v, want invalid_grant", status, a)
	}
	tok, ok := srv.Rotate("g-rt-5")
	if !ok || tok.AccessToken != "g-at-6" || tok.RefreshToken != "g-rt-6" {
		t.Fatalf("Rotate: %v, %v", tok, ok)
	}
	if _, ok := srv.Rotate("g-rt-5"); ok {
		t.Error("Rotate took a rotated-away token")
	}
	if n := srv.TotalTokenRequests(); n != 2 {
		t.Errorf("%d POSTs counted, want 2: Rotate is not a POST", n)
	}
	if live, _ := srv.LiveRefreshToken("g-rt-4"); live != "g-rt-6" {
		t.Errorf("live %q, want g-rt-6", live)
	}
	if !srv.ValidAccessToken("g-at-6") || srv.ValidAccessToken("g-at-0") {
		t.Error("ValidAccessToken does not follow what was issued")
	}
}

// TestOmitRefreshToken: without rotation, OmitRefreshToken leaves the
// refresh token out of the answer, and the token keeps working.
func TestOmitRefreshToken(t *testing.T) {
	for _, omit := range []bool{false, true} {
		srv := newServer(t, fakepandadoc.Options{ExpiresIn: 60, OmitRefreshToken: omit, TokenName: numbered})
		srv.AddGrant("g", "g-rt-0", 0)
		for range 2 {
			status, a := refresh(t, srv, "g-rt-0")
			if status != 200 || (a.RefreshToken == nil) != omit {
				t.Fatalf("omit %v: %d %+v", omit, status, a)
			}
			if !omit && *a.RefreshToken != "g-rt-0" {
				t.Errorf("without rotation answered %q, want g-rt-0", *a.RefreshToken)
			}
		}
	}
}

// TestTokenPostsRecord: every POST's form, headers and arrival time (by
// Options.Now) are recorded, in order, and the copies are the caller's.
func TestTokenPostsRecord(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv := newServer(t, fakepandadoc.Options{Now: clock, TokenName: numbered})
	srv.AddGrant("g", "g-rt-0", 0)
	refresh(t, srv, "g-rt-0")
	mu.Lock()
	now = now.Add(7 * time.Second)
	mu.Unlock()
	refresh(t, srv, "unknown")
	posts := srv.TokenPosts()
	if len(posts) != 2 {
		t.Fatalf("%d records, want 2", len(posts))
	}
	if posts[0].Form.Get("refresh_token") != "g-rt-0" || posts[1].Form.Get("refresh_token") != "unknown" ||
		posts[0].Header.Get("Accept") != "application/json" {
		t.Errorf("records %+v", posts)
	}
	if d := posts[1].At.Sub(posts[0].At); d != 7*time.Second {
		t.Errorf("arrivals %v apart, want 7s", d)
	}
	posts[0].Form.Set("refresh_token", "changed")
	if got := srv.TokenPost(0).Form.Get("refresh_token"); got != "g-rt-0" {
		t.Errorf("a caller's change reached the record: %q", got)
	}
}

// TestGatePassAndPeak: with the gate closed, PassTokenRequest lets
// exactly one held POST through, and MaxConcurrentTokenRequests is the
// most POSTs in progress at once.
func TestGatePassAndPeak(t *testing.T) {
	srv := newServer(t, fakepandadoc.Options{ExpiresIn: 60, TokenName: numbered})
	const n = 3
	for i := range n {
		srv.AddGrant(fmt.Sprint("g", i), fmt.Sprint("g", i, "-rt-0"), 0)
	}
	srv.HoldTokenRequests()
	ctx := context.Background()
	var wg sync.WaitGroup
	done := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := refresh(t, srv, fmt.Sprint("g", i, "-rt-0"))
			done <- status
		}()
	}
	if err := srv.WaitHeldTokenRequests(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := srv.PassTokenRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if status := <-done; status != 200 {
		t.Errorf("the passed POST: %d", status)
	}
	if held := srv.HeldTokenRequests(); held != n-1 {
		t.Errorf("%d held after one pass, want %d", held, n-1)
	}
	srv.ReleaseTokenRequests()
	wg.Wait()
	if peak := srv.MaxConcurrentTokenRequests(); peak != n {
		t.Errorf("peak %d, want %d", peak, n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := srv.PassTokenRequest(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("a pass with nobody held: %v, want the context's error", err)
	}
}

// TestRoundTripDropped: a request the server drops returns its context's
// error when that has ended, else ErrDropped; the caller's body is
// closed and its request not modified.
func TestRoundTripDropped(t *testing.T) {
	srv := newServer(t, fakepandadoc.Options{})
	srv.FailNext(fakepandadoc.Fault{Kind: fakepandadoc.KindReset})
	body := &closeCounter{Reader: strings.NewReader("grant_type=refresh_token")}
	req, _ := http.NewRequest(http.MethodPost, tokenURL, body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := srv.RoundTrip(req)
	if !errors.Is(err, fakepandadoc.ErrDropped) || resp != nil {
		t.Errorf("reset: %v, %v; want ErrDropped", resp, err)
	}
	if body.closed != 1 {
		t.Errorf("body closed %d times, want 1", body.closed)
	}
	if len(req.Header) != 1 || req.Form != nil || req.PostForm != nil {
		t.Errorf("the caller's request was modified: %+v", req)
	}

	srv.FailNext(fakepandadoc.Fault{Kind: fakepandadoc.KindHang})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		srv.WaitTokenRequests(context.Background(), 2)
		cancel()
	}()
	if _, err := srv.RoundTrip(refreshReq(ctx, "x")); !errors.Is(err, context.Canceled) {
		t.Errorf("hang: %v, want the context's error", err)
	}
	resp, err = srv.RoundTrip(refreshReq(context.Background(), "x"))
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("after the faults: %v, %v; want invalid_grant", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// TestRewrite: a Rewrite fault carries out the grant, rotating the
// refresh token and detecting reuse as without a fault, and answers what
// Rewrite makes of the grant's answer; Rewrite may call the Server's
// methods, and a returned KindSuccess sends the grant's answer.
func TestRewrite(t *testing.T) {
	srv := newServer(t, fakepandadoc.Options{ExpiresIn: 60, Rotation: true, ReuseDetection: true, TokenName: numbered})
	srv.AddGrant("g", "g-rt-0", 0)
	var seen []fakepandadoc.Fault
	refused := func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		seen = append(seen, answer)
		live, _ := srv.LiveRefreshToken("g-rt-0") // the Server's lock is free
		return fakepandadoc.Body(503, "application/json", `{"error":"temporarily_unavailable","refresh_token":"`+live+`"}`)
	}
	unchanged := func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		seen = append(seen, answer)
		return fakepandadoc.Fault{}
	}
	srv.FailNext(fakepandadoc.Fault{Rewrite: refused}, fakepandadoc.Fault{Rewrite: unchanged}, fakepandadoc.Fault{Kind: fakepandadoc.KindReset, Rewrite: unchanged})

	status, a := refresh(t, srv, "g-rt-0")
	if status != 503 || a.Error != "temporarily_unavailable" || a.RefreshToken == nil || *a.RefreshToken != "g-rt-1" {
		t.Fatalf("rewritten: %d %+v, want 503 with the rotated g-rt-1", status, a)
	}
	var granted answer
	if err := json.Unmarshal([]byte(seen[0].Body), &granted); err != nil || seen[0].Status != 200 ||
		seen[0].Kind != fakepandadoc.KindRespond || seen[0].ContentType != "application/json" ||
		granted.AccessToken != "g-at-1" || granted.RefreshToken == nil || *granted.RefreshToken != "g-rt-1" {
		t.Errorf("Rewrite got %+v (%v), want the grant's 200 with g-at-1 and g-rt-1", seen[0], err)
	}
	if live := srv.RefreshTokens(); len(live) != 1 || live[0] != "g-rt-1" {
		t.Errorf("live refresh tokens %q, want the rotation carried out: g-rt-1", live)
	}

	status, a = refresh(t, srv, "g-rt-1")
	if status != 200 || a.AccessToken != "g-at-2" || a.RefreshToken == nil || *a.RefreshToken != "g-rt-2" {
		t.Errorf("a returned KindSuccess: %d %+v, want the grant's g-at-2 and g-rt-2", status, a)
	}

	// Kind is ignored: the spent g-rt-1 is refused, the reuse detected.
	status, a = refresh(t, srv, "g-rt-1")
	if status != 400 || a.Error != "invalid_grant" {
		t.Errorf("a spent token: %d %+v, want the grant's invalid_grant", status, a)
	}
	if len(seen) != 3 || seen[2].Status != 400 {
		t.Errorf("Rewrite saw %+v, want the refusal last", seen)
	}
	if n := srv.ReusedRefreshTokens(); n != 1 {
		t.Errorf("%d grants revoked for reuse, want 1", n)
	}
	if n, f := srv.TotalTokenRequests(), srv.PendingFaults(); n != 3 || f != 0 {
		t.Errorf("%d POSTs, %d faults left; want 3, 0", n, f)
	}
}

// TestRoundTripWithoutBody: a request without a body (a GET) is served,
// not a panic.
func TestRoundTripWithoutBody(t *testing.T) {
	srv := newServer(t, fakepandadoc.Options{})
	req, _ := http.NewRequest(http.MethodGet, tokenURL, nil)
	resp, err := srv.RoundTrip(req)
	if err != nil || resp == nil {
		t.Fatalf("%v, %v; want an answer", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
