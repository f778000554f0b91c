package pandadocauth

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

// TestRevokedStoreTokenBurst: a burst of concurrent requests carrying a
// revoked token loaded from the Store all succeed after one refresh. A
// loaded token has never worked here, but it did not come from the
// endpoint, so the never-worked back-off does not keep it.
func TestRevokedStoreTokenBurst(t *testing.T) {
	t.Parallel()
	for _, from := range []string{"store", "initial"} {
		t.Run(from, func(t *testing.T) {
			t.Parallel()
			const n = 10
			srv := newTokenServer(t, 3600)
			mt := httpmock.NewMockTransport()
			mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
			// The API holds the first n requests until all have arrived,
			// so that every one of them carries the revoked token.
			arrived := make(chan struct{}, n)
			release := make(chan struct{})
			var once sync.Once
			mt.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
				if req.Header.Get("Authorization") == "Bearer "+testAccess {
					arrived <- struct{}{}
					<-release
					return httpmock.NewStringResponse(401, `{"detail":"revoked"}`), nil
				}
				return httpmock.NewStringResponse(200, `{}`), nil
			})
			clock := newAutoClock()
			tok := &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
			ts := &TokenSource{Config: testConfig(mt), clk: &clockRef{clock}}
			if from == "store" {
				ts.Store = &memStore{tok: tok}
			} else {
				ts.Initial = tok
			}
			t.Cleanup(ts.Wait)
			client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get(apiURL)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					codes[i] = resp.StatusCode
				}()
			}
			for range n {
				<-arrived
			}
			once.Do(func() { close(release) })
			wg.Wait()
			for i, c := range codes {
				if c != 200 {
					t.Errorf("request %d: %d, want 200 after the refresh", i, c)
				}
			}
			if got := srv.TotalTokenRequests(); got != 1 {
				t.Errorf("%d refreshes, want 1 for the storm", got)
			}
		})
	}
}

// TestInvalidateReportsWhatItDid: Invalidate is a compare-and-swap on
// the exact token.
func TestInvalidateReportsWhatItDid(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, newTokenServer(t, 3600), time.Hour)
	tok, _ := ts.Token()
	if ts.Invalidate(&oauth2.Token{AccessToken: "someone else's"}) {
		t.Error("invalidated a token that is not served")
	}
	if !ts.Invalidate(tok) {
		t.Error("did not invalidate the token served")
	}
	if ts.Invalidate(tok) {
		t.Error("invalidated twice")
	}
	tok2, err := ts.Token()
	if err != nil || tok2.AccessToken == tok.AccessToken {
		t.Fatalf("%v, %v; want a new token", tok2, err)
	}
	if ts.Invalidate(tok) {
		t.Error("a late rejection invalidated the newer token")
	}
	if got, _ := ts.Token(); got != tok2 {
		t.Error("the newer token was replaced")
	}
}

// TestNeverWorkedBackoffOnlyForEndpointTokens: the back-off for tokens
// rejected one after another applies to tokens from the endpoint only.
func TestNeverWorkedBackoffOnlyForEndpointTokens(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, clock := newSource(t, srv, time.Hour)
	mt.RegisterResponder("GET", apiURL, httpmock.NewStringResponder(401, `{}`))
	client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}
	get := func() {
		resp, err := client.Get(apiURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get() // Initial rejected: refreshed at once; the replay is rejected too
	for range 5 {
		get() // at-SECRET-1 never worked: kept for the back-off
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d refreshes within the back-off, want 1", n)
	}
	clock.Advance(rejectionBackoff(1))
	get()
	if n := srv.TotalTokenRequests(); n != 2 {
		t.Errorf("%d refreshes after the back-off, want 2", n)
	}
}

func TestTokenSourceInvalidate(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	old, _ := ts.Token()
	if !ts.Invalidate(old) {
		t.Fatal("Invalidate of the current token returned false")
	}
	if ts.Invalidate(old) {
		t.Error("a second Invalidate of the same token returned true")
	}
	fresh, err := ts.Token()
	if err != nil || fresh.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v", fresh, err)
	}
	// A late rejection of the replaced token changes nothing.
	if ts.Invalidate(old) {
		t.Error("Invalidate of a replaced token returned true")
	}
	if tok, _ := ts.Token(); tok != fresh {
		t.Error("a late Invalidate threw away the newer token")
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
}
