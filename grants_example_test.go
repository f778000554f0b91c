package pandadocauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// ExampleGrants serves two customers' PandaDoc workspaces from one
// client. Each grant's token is saved under its key when the customer
// connects (after Config.Exchange); each request names its grant in its
// context.
func ExampleGrants() {
	srv := pandadoctest.NewServer() // a fake PandaDoc; use your Config and no base below
	defer srv.Close()
	dir, err := os.MkdirTemp("", "pandadoc-grants")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	store := &pandadocauth.DirStore{Dir: dir} // one file per grant; pgstore and redisstore have keyed forms too
	for _, workspace := range []string{"acme", "globex"} {
		tok := srv.IssueToken() // in an app: conf.Exchange(ctx, code) when the customer connects
		if err := store.Save(ctx, workspace, tok); err != nil {
			panic(err)
		}
	}

	grants := &pandadocauth.Grants{
		Config: srv.Config(),
		Store:  store,
		OnRevoked: func(workspace string, err error) {
			fmt.Println(workspace, "disconnected the app; ask them to connect again")
		},
	}
	defer grants.Wait()
	client := &http.Client{Transport: grants.Transport(srv.Client().Transport)}
	for _, workspace := range []string{"acme", "globex"} {
		req, err := http.NewRequestWithContext(pandadocauth.WithGrant(ctx, workspace), "GET", srv.URL+"/public/v1/documents", nil)
		if err != nil {
			panic(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(workspace, resp.Status)
	}
	// Output:
	// acme 200 OK
	// globex 200 OK
}

// ExampleGrants_Forget: a customer disconnects the app (their grant is
// revoked), then connects again. The app saves their new token and
// forgets the grant, and the next request uses the new token at once.
func ExampleGrants_Forget() {
	srv := pandadoctest.NewServer() // a fake PandaDoc; use your Config and no base below
	defer srv.Close()
	dir, err := os.MkdirTemp("", "pandadoc-grants")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	store := &pandadocauth.DirStore{Dir: dir}
	tok := srv.IssueToken() // in an app: conf.Exchange(ctx, code) when the customer connects
	if err := store.Save(ctx, "acme", tok); err != nil {
		panic(err)
	}
	revoked := make(chan string, 1)
	grants := &pandadocauth.Grants{
		Config:    srv.Config(),
		Store:     store,
		OnRevoked: func(workspace string, err error) { revoked <- workspace },
	}
	defer grants.Wait()
	client := &http.Client{Transport: grants.Transport(srv.Client().Transport)}
	get := func() {
		req, err := http.NewRequestWithContext(pandadocauth.WithGrant(ctx, "acme"), "GET", srv.URL+"/public/v1/documents", nil)
		if err != nil {
			panic(err)
		}
		resp, err := client.Do(req)
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re):
			fmt.Println("refresh refused:", re.ErrorCode)
		case err != nil:
			panic(err)
		default:
			resp.Body.Close()
			fmt.Println(resp.Status)
		}
	}

	get()
	srv.Revoke(tok.AccessToken) // the customer disconnects the app
	srv.Revoke(tok.RefreshToken)
	get()
	grants.Wait() // OnRevoked has run
	fmt.Println(<-revoked, "disconnected the app")

	// They connect again.
	if err := store.Save(ctx, "acme", srv.IssueToken()); err != nil {
		panic(err)
	}
	grants.Forget("acme")
	get()
	// Output:
	// 200 OK
	// refresh refused: invalid_grant
	// acme disconnected the app
	// 200 OK
}

// TestGrantsAgainstPandadoctest: many grants on a token endpoint that
// rotates refresh tokens: after every access token expires, each grant
// refreshes once however many requests it serves; a revoked grant fails
// with invalid_grant, is reported once, and the others go on.
func TestGrantsAgainstPandadoctest(t *testing.T) {
	t.Parallel()
	const grants, perGrant = 40, 5
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	store := &keyedMem{m: map[string]*oauth2.Token{}}
	for i := range grants {
		store.m[fmt.Sprint("ws", i)] = srv.IssueToken()
	}
	revokedRT := store.m["ws0"].RefreshToken
	var mu sync.Mutex
	var reports []string
	g := &pandadocauth.Grants{Config: srv.Config(), Store: store, OnRevoked: func(key string, err error) {
		mu.Lock()
		reports = append(reports, key)
		mu.Unlock()
	}}
	defer g.Wait()
	client := &http.Client{Transport: g.Transport(srv.Client().Transport)}
	get := func(key string) (int, error) {
		req, _ := http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), key), "GET", srv.URL+"/public/v1/documents", nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	burst := func() map[string][]error {
		errs := map[string][]error{}
		var wg sync.WaitGroup
		var emu sync.Mutex
		for i := range grants {
			for range perGrant {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := fmt.Sprint("ws", i)
					code, err := get(key)
					if err == nil && code != 200 {
						err = fmt.Errorf("status %d", code)
					}
					if err != nil {
						emu.Lock()
						errs[key] = append(errs[key], err)
						emu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		return errs
	}
	if errs := burst(); len(errs) != 0 {
		t.Fatalf("warm burst: %v", errs)
	}
	if n := srv.TokenRequests("refresh_token"); n != 0 {
		t.Fatalf("%d refreshes with valid tokens", n)
	}
	srv.ExpireAll()
	srv.Revoke(revokedRT)
	errs := burst()
	if n := srv.TokenRequests("refresh_token"); n != grants {
		t.Errorf("%d refreshes after every token expired, want %d (one per grant)", n, grants)
	}
	for key, es := range errs {
		if key != "ws0" {
			t.Errorf("%s: %v", key, es)
		}
	}
	// The requests that carried the revoked grant's expired token get
	// the API's 401 (the refresh that would replay them failed); the
	// next one fails fast with the refresh's error.
	if len(errs["ws0"]) != perGrant {
		t.Errorf("the revoked grant: %d failures, want %d", len(errs["ws0"]), perGrant)
	}
	_, err := get("ws0")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("the revoked grant: %v, want invalid_grant", err)
	}
	g.Wait() // OnRevoked runs on a goroutine of its own
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0] != "ws0" {
		t.Errorf("OnRevoked reports %v, want [ws0]", reports)
	}
}

// keyedMem is an in-memory KeyedStore.
type keyedMem struct {
	mu sync.Mutex // guards m
	m  map[string]*oauth2.Token
}

func (k *keyedMem) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key], nil
}

func (k *keyedMem) Save(ctx context.Context, key string, t *oauth2.Token) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = t
	return nil
}
