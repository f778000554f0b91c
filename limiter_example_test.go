package pandadocauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// A Limiter below the authenticating Transport keeps a client under
// PandaDoc's limits. Here the list of documents is limited to 2 a
// minute, so the third request would wait a minute: its context allows
// a second, so it fails at once, unsent.
func ExampleLimiter() {
	srv := pandadoctest.NewServer() // stands in for PandaDoc
	defer srv.Close()
	path, cleanup := tempTokenFile()
	defer cleanup()
	loggedIn(srv, path)

	src := &pandadocauth.TokenSource{
		Config: srv.Config(), // in real code: &pandadocauth.Config{ClientID: …, ClientSecret: …}
		Store:  &pandadocauth.FileStore{Path: path},
	}
	defer src.Wait()
	lim := &pandadocauth.Limiter{
		Limits: pandadocauth.Limits{ListStatusDelete: 2}, // in real code, leave it out: PandaDoc's limits
	}
	client := pandadocauth.NewClient(&http.Client{Transport: lim}, src)

	for i := 1; i <= 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/public/v1/documents", nil)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := client.Do(req)
		cancel()
		var rle *pandadocauth.RateLimitError
		switch {
		case errors.As(err, &rle):
			fmt.Printf("request %d: not sent, %s: next slot in about %v\n", i, rle.Class, rle.Wait.Truncate(time.Minute))
		case err != nil:
			log.Fatal(err)
		default:
			resp.Body.Close()
			fmt.Printf("request %d: %s\n", i, resp.Status)
		}
	}
	// Output:
	// request 1: 200 OK
	// request 2: 200 OK
	// request 3: not sent, list_status_delete: next slot in about 1m0s
}

// TestLimiterBelowNewClient: under NewClient, the replay after a 401
// takes a slot, and the token endpoint none.
func TestLimiterBelowNewClient(t *testing.T) {
	srv := pandadoctest.NewServer()
	defer srv.Close()
	tok := srv.IssueToken()
	// Every class but the list is limited to 1, the token endpoint
	// included were it limited; MaxWait turns a wait into an error.
	limits := pandadocauth.Limits{CreateFromPDF: 1, CreateFromTemplate: 1, Send: 1, Details: 1, ListStatusDelete: 2, Download: 1, DownloadProtected: 1, Notarization: 1, Other: 1}
	conf := srv.Config()
	conf.HTTPClient = &http.Client{Transport: &pandadocauth.Limiter{Base: srv.Client().Transport, Limits: limits, MaxWait: time.Nanosecond}}
	src := &pandadocauth.TokenSource{Config: conf, Initial: tok}
	defer src.Wait()
	lim := &pandadocauth.Limiter{Base: srv.Client().Transport, Limits: limits, MaxWait: time.Nanosecond}
	client := pandadocauth.NewClient(&http.Client{Transport: lim}, src)

	srv.Revoke(tok.AccessToken) // the first request is answered 401, refreshed and replayed
	resp, err := client.Get(srv.URL + "/public/v1/documents")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	resp.Body.Close()
	if got := srv.APIRequests(401) + srv.APIRequests(200); got != 2 {
		t.Fatalf("%d API requests, want 2: the request and its replay", got)
	}
	if _, err := src.Refresh(context.Background()); err != nil { // a second token request
		t.Fatal(err)
	}
	_, err = client.Get(srv.URL + "/public/v1/documents")
	var rle *pandadocauth.RateLimitError
	if !errors.As(err, &rle) || rle.Class != pandadocauth.ClassListStatusDelete {
		t.Fatalf("err = %v, want a *RateLimitError: the replay took the second slot", err)
	}
	if n := srv.TokenRequests("refresh_token"); n != 2 {
		t.Errorf("%d refreshes, want 2, neither limited", n)
	}
}
