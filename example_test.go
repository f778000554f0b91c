package pandadocauth_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// The examples run offline against pandadoctest, a fake PandaDoc. In
// real code, drop the server: build the Config from your credentials
// and send requests to https://api.pandadoc.com.

// tempTokenFile returns a token file in a new temporary directory, and a
// function that removes the directory. In real code, use a file that
// outlives the process, such as the one "pandadoc-oauth login" writes.
func tempTokenFile() (string, func()) {
	dir, err := os.MkdirTemp("", "pandadocauth-example")
	if err != nil {
		log.Fatal(err)
	}
	return filepath.Join(dir, "token.json"), func() { os.RemoveAll(dir) }
}

// loggedIn stands in for a first login: it saves a token of a new grant
// to path, as "pandadoc-oauth login" or the Config.Exchange example does.
func loggedIn(srv *pandadoctest.Server, path string) {
	store := &pandadocauth.FileStore{Path: path}
	if err := store.Save(context.Background(), srv.IssueToken()); err != nil {
		log.Fatal(err)
	}
}

func ExampleConfig_AuthCodeURL() {
	conf := &pandadocauth.Config{
		ClientID:    "my-client-id",
		RedirectURL: "https://example.com/pandadoc/callback",
	}
	// Per login: a fresh random state, checked on the way back, and a
	// PKCE verifier, kept for Exchange.
	state := oauth2.GenerateVerifier()
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

	u, _ := url.Parse(authURL)
	q := u.Query()
	fmt.Println(u.Scheme + "://" + u.Host + u.Path)
	fmt.Println(q.Get("client_id"), q.Get("redirect_uri"), q.Get("response_type"), q.Get("scope"))
	fmt.Println(q.Get("code_challenge_method"), q.Get("code_challenge") == oauth2.S256ChallengeFromVerifier(verifier))
	// Output:
	// https://app.pandadoc.com/oauth2/authorize
	// my-client-id https://example.com/pandadoc/callback code read write
	// S256 true
}

// A login from start to end: the consent URL, the redirect back with a
// code, the exchange, and the token saved where the program will find it
// on its next start.
func ExampleConfig_Exchange() {
	srv := pandadoctest.NewServer() // stands in for PandaDoc
	defer srv.Close()
	conf := srv.Config() // in real code: &pandadocauth.Config{ClientID: …, ClientSecret: …, RedirectURL: …}
	path, cleanup := tempTokenFile()
	defer cleanup()
	ctx := context.Background()

	state := oauth2.GenerateVerifier()
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

	// The user approves in the browser, which PandaDoc sends back to the
	// redirect URL with a code; here a client plays the browser.
	browser := srv.Client()
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := browser.Get(authURL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))

	// The redirect handler: check the state, then exchange the code with
	// the verifier, and save the token before anything else.
	if back.Query().Get("state") != state {
		log.Fatal("state mismatch: the redirect does not belong to this login")
	}
	tok, err := conf.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		log.Fatal(err)
	}
	store := &pandadocauth.FileStore{Path: path}
	if err := store.Save(ctx, tok); err != nil {
		log.Fatal(err)
	}
	saved, _ := store.Load(ctx)
	fmt.Println(tok.TokenType, tok.Extra("scope"), saved.RefreshToken == tok.RefreshToken)
	// Output: Bearer read+write true
}

// A service's client: the token comes from a file and every new one,
// with its rotated refresh token, is saved there before it is used.
func ExampleTransport() {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true)) // stands in for PandaDoc
	defer srv.Close()
	path, cleanup := tempTokenFile()
	defer cleanup()
	loggedIn(srv, path)

	src := &pandadocauth.TokenSource{
		Config: srv.Config(), // in real code: &pandadocauth.Config{ClientID: …, ClientSecret: …}
		Store:  &pandadocauth.FileStore{Path: path},
	}
	defer src.Wait() // before exit, finish saving a refreshed token
	client := &http.Client{
		Transport: &pandadocauth.Transport{Source: src},
		Timeout:   30 * time.Second,
	}
	get := func() {
		resp, err := client.Get(srv.URL + "/public/v1/documents") // https://api.pandadoc.com/public/v1/documents
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body))
	}

	get()
	srv.ExpireAll() // PandaDoc answers 401: the token is refreshed and the request replayed
	get()

	saved, _ := (&pandadocauth.FileStore{Path: path}).Load(context.Background())
	fmt.Println("refreshes:", srv.TokenRequests("refresh_token"))
	fmt.Println("saved refresh token is the live one:", srv.RefreshTokens()[0] == saved.RefreshToken)
	// Output:
	// 200 {"results":[]}
	// 200 {"results":[]}
	// refreshes: 1
	// saved refresh token is the live one: true
}

// An http.Client the service already has keeps its timeout and
// transport, and gains authentication.
func ExampleTransport_existingClient() {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true)) // stands in for PandaDoc
	defer srv.Close()
	path, cleanup := tempTokenFile()
	defer cleanup()
	loggedIn(srv, path)

	// A client the service already has, with its own timeout and
	// transport (instrumentation, proxies, …).
	existing := &http.Client{Timeout: 10 * time.Second, Transport: http.DefaultTransport}

	src := &pandadocauth.TokenSource{
		Config: srv.Config(), // in real code: &pandadocauth.Config{ClientID: …, ClientSecret: …}
		Store:  &pandadocauth.FileStore{Path: path},
	}
	defer src.Wait()
	client := pandadocauth.NewClient(existing, src)

	resp, err := client.Get(srv.URL + "/public/v1/documents") // https://api.pandadoc.com/public/v1/documents
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, client.Timeout)
	// Output: 200 10s
}

func ExampleFileStore() {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true)) // stands in for PandaDoc
	defer srv.Close()
	path, cleanup := tempTokenFile()
	defer cleanup()
	loggedIn(srv, path)

	store := &pandadocauth.FileStore{Path: path}
	src := &pandadocauth.TokenSource{
		Config: srv.Config(), // in real code: &pandadocauth.Config{ClientID: …, ClientSecret: …}
		Store:  store,        // read at first use; every new token is saved before use
	}
	defer src.Wait()

	// The first call reads the store: the saved token is valid, so no
	// refresh is needed.
	tok, err := src.Token()
	if err != nil {
		log.Fatal(err)
	}
	saved, _ := store.Load(context.Background())
	fmt.Println(tok.AccessToken == saved.AccessToken, srv.TotalTokenRequests())
	// Output: true 0
}

func ExampleAPIKeyTransport() {
	srv := pandadoctest.NewServer(pandadoctest.WithAPIKey("my-api-key")) // stands in for PandaDoc
	defer srv.Close()

	client := &http.Client{
		Transport: &pandadocauth.APIKeyTransport{Key: "my-api-key"},
		Timeout:   30 * time.Second,
	}
	resp, err := client.Get(srv.URL + "/public/v1/documents") // https://api.pandadoc.com/public/v1/documents
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	// Output: 200
}

// TestExamplesAreReadyToCopy checks the examples above as a reader would
// copy them: no mock library, and every one that builds a TokenSource
// gives it a Store, so the rotated refresh token survives a restart.
func TestExamplesAreReadyToCopy(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		if strings.Contains(imp.Path.Value, "httpmock") {
			t.Errorf("the examples import %s", imp.Path.Value)
		}
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	examples := 0
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || !strings.HasPrefix(fn.Name.Name, "Example") {
			continue
		}
		examples++
		body := string(src[fset.Position(fn.Body.Pos()).Offset:fset.Position(fn.Body.End()).Offset])
		if !strings.Contains(body, "// Output:") {
			t.Errorf("%s has no // Output: line", fn.Name.Name)
		}
		usesSource := strings.Contains(body, "pandadocauth.TokenSource{") || strings.Contains(body, ".TokenSource(") || strings.Contains(body, ".Client(tok")
		if usesSource && !strings.Contains(body, "Store:") {
			t.Errorf("%s builds a TokenSource without a Store: copied, it loses the rotated refresh token on restart", fn.Name.Name)
		}
	}
	if examples < 6 {
		t.Errorf("found %d examples, want at least 6", examples)
	}
}

// countingSource wraps a *TokenSource the way a service might, to count
// the tokens it hands out. It passes Invalidate on, so it is an
// Invalidator and Transport keeps recovering from 401s through it.
type countingSource struct {
	src    *pandadocauth.TokenSource
	tokens int
}

func (c *countingSource) Token() (*oauth2.Token, error) {
	c.tokens++
	return c.src.Token()
}

func (c *countingSource) Invalidate(t *oauth2.Token) bool { return c.src.Invalidate(t) }

// A wrapper around a TokenSource keeps 401 recovery only if it passes
// Invalidate on. oauth2.ReuseTokenSource and oauth2.NewClient(ctx, src)
// do not: with them, a revoked token is sent, and answered 401, until
// it expires (a year on PandaDoc).
func ExampleInvalidator() {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true)) // stands in for PandaDoc
	defer srv.Close()
	path, cleanup := tempTokenFile()
	defer cleanup()
	loggedIn(srv, path)

	src := &pandadocauth.TokenSource{Config: srv.Config(), Store: &pandadocauth.FileStore{Path: path}}
	defer src.Wait()
	wrapped := &countingSource{src: src}
	lossy := oauth2.ReuseTokenSource(nil, src) // not an Invalidator
	for _, s := range []oauth2.TokenSource{wrapped, lossy} {
		client := &http.Client{Transport: &pandadocauth.Transport{Source: s}, Timeout: 30 * time.Second}
		srv.ExpireAll() // PandaDoc answers 401 to the token in use
		resp, err := client.Get(srv.URL + "/public/v1/documents")
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		_, recovers := s.(pandadocauth.Invalidator)
		fmt.Println(resp.StatusCode, "Invalidator:", recovers)
	}
	// Output:
	// 200 Invalidator: true
	// 401 Invalidator: false
}
