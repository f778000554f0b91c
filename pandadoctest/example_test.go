package pandadoctest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

func ExampleServer() {
	srv := pandadoctest.NewServer()
	defer srv.Close()

	tok := srv.IssueToken()
	get := func() {
		req, _ := http.NewRequest("GET", srv.URL+"/public/v1/documents", nil)
		tok.SetAuthHeader(req)
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body))
	}

	get()
	srv.ExpireAll()
	get()
	// Output:
	// 200 {"results":[]}
	// 401 {"type":"authentication_error","detail":"Authentication credentials were not provided."}
}

// A test scripts the token endpoint: here it answers 503 once, then
// normally.
func ExampleServer_FailNext() {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	cfg := srv.Config()
	tok := srv.IssueToken()

	srv.FailNext(pandadoctest.RetryAfter(503, "1"))

	_, err := cfg.Refresh(context.Background(), tok.RefreshToken)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		fmt.Println("first refresh:", re.Response.StatusCode, re.Response.Header.Get("Retry-After"))
	}
	next, err := cfg.Refresh(context.Background(), tok.RefreshToken)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("second refresh rotated the refresh token:", next.RefreshToken != tok.RefreshToken)
	fmt.Println("newest refresh token known to the server:", srv.RefreshTokens()[0] == next.RefreshToken)
	fmt.Println("refresh requests:", srv.TokenRequests("refresh_token"))
	// Output:
	// first refresh: 503 1
	// second refresh rotated the refresh token: true
	// newest refresh token known to the server: true
	// refresh requests: 2
}

// The authorization endpoint approves at once and redirects with a code
// and the caller's state.
func ExampleServer_authorize() {
	srv := pandadoctest.NewServer()
	defer srv.Close()
	cfg := srv.Config()

	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(cfg.AuthCodeURL("state-42"))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	fmt.Println(resp.StatusCode, strings.TrimSuffix(loc.String(), "?"+loc.RawQuery), loc.Query().Get("state"))

	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.TokenType, tok.Valid())
	// Output:
	// 302 http://127.0.0.1:8765/callback state-42
	// Bearer true
}

// A test holds the token endpoint's answers to line up concurrent
// callers, without guessing how long they take to arrive: here, five
// callers of an expired token share one refresh.
func ExampleServer_HoldTokenRequests() {
	srv := pandadoctest.NewServer()
	defer srv.Close()
	tok := srv.IssueToken()
	tok.Expiry = time.Now().Add(-time.Minute) // expired: the first caller refreshes
	src := srv.Config().TokenSource(tok)
	defer src.Wait()

	srv.HoldTokenRequests()
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := src.Token(); err != nil {
				fmt.Println(err)
			}
		}()
	}
	ctx := context.Background()
	if err := srv.WaitHeldTokenRequests(ctx, 1); err != nil { // the refresh has arrived
		fmt.Println(err)
		return
	}
	srv.ReleaseTokenRequests()
	wg.Wait()
	fmt.Println("token POSTs:", srv.TotalTokenRequests())
	// Output: token POSTs: 1
}
