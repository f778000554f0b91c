package pandadocauth_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

// fakePandaDoc answers the token endpoint and one API route offline, so
// the examples run without a PandaDoc account.
func fakePandaDoc() *httpmock.MockTransport {
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", pandadocauth.TokenURL, httpmock.NewStringResponder(200,
		`{"access_token":"new-access","token_type":"Bearer","expires_in":31535999,"scope":"read+write","refresh_token":"new-refresh"}`))
	mt.RegisterResponder("GET", "https://api.pandadoc.com/public/v1/documents",
		func(req *http.Request) (*http.Response, error) {
			auth := req.Header.Get("Authorization")
			if auth != "Bearer new-access" && auth != "API-Key my-api-key" {
				return httpmock.NewStringResponse(401, `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`), nil
			}
			return httpmock.NewStringResponse(200, `{"results":[]}`), nil
		})
	return mt
}

func ExampleConfig_AuthCodeURL() {
	conf := &pandadocauth.Config{
		ClientID:    "my-client-id",
		RedirectURL: "https://example.com/pandadoc/callback",
	}
	// Use a fresh random state per login, and check it on the way back.
	fmt.Println(conf.AuthCodeURL("state-123"))
	// Output:
	// https://app.pandadoc.com/oauth2/authorize?client_id=my-client-id&redirect_uri=https%3A%2F%2Fexample.com%2Fpandadoc%2Fcallback&response_type=code&scope=read+write&state=state-123
}

func ExampleConfig_Exchange() {
	conf := &pandadocauth.Config{
		ClientID:     "my-client-id",
		ClientSecret: "my-client-secret",
		RedirectURL:  "https://example.com/pandadoc/callback",
		HTTPClient:   &http.Client{Transport: fakePandaDoc()}, // omit to reach PandaDoc
	}
	// code comes from the redirect: /pandadoc/callback?code=…&state=…
	tok, err := conf.Exchange(context.Background(), "code-from-redirect")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.TokenType, tok.Extra("scope"), tok.RefreshToken != "")
	// Output: Bearer read+write true
}

func ExampleTransport() {
	mock := fakePandaDoc() // stands in for PandaDoc; omit in real code
	conf := &pandadocauth.Config{
		ClientID:     "my-client-id",
		ClientSecret: "my-client-secret",
		HTTPClient:   &http.Client{Transport: mock},
	}
	src := &pandadocauth.TokenSource{
		Config: conf,
		// A token saved earlier; it has expired, so the first request
		// refreshes it.
		Initial: &oauth2.Token{AccessToken: "old-access", RefreshToken: "old-refresh", Expiry: time.Now().Add(-time.Hour)},
	}
	client := &http.Client{
		Transport: &pandadocauth.Transport{Source: src, Base: mock},
		Timeout:   30 * time.Second,
	}
	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 {"results":[]}
}

func ExampleTransport_existingClient() {
	mock := fakePandaDoc() // stands in for PandaDoc; omit in real code
	// A client the service already has, with its own timeout and
	// transport (instrumentation, proxies, …).
	existing := &http.Client{Timeout: 10 * time.Second, Transport: mock}

	conf := &pandadocauth.Config{ClientID: "my-client-id", ClientSecret: "my-client-secret", HTTPClient: &http.Client{Transport: mock}}
	src := conf.TokenSource(&oauth2.Token{RefreshToken: "saved-refresh"})
	client := pandadocauth.NewClient(existing, src)

	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, client.Timeout)
	// Output: 200 10s
}

func ExampleFileStore() {
	dir, _ := os.MkdirTemp("", "pandadocauth-example")
	defer os.RemoveAll(dir)
	store := &pandadocauth.FileStore{Path: filepath.Join(dir, "token.json")}

	// Saved once after the first login, for example by Exchange's caller.
	store.Save(context.Background(), &oauth2.Token{RefreshToken: "saved-refresh"})

	mock := fakePandaDoc() // stands in for PandaDoc; omit in real code
	src := &pandadocauth.TokenSource{
		Config: &pandadocauth.Config{ClientID: "my-client-id", ClientSecret: "my-client-secret", HTTPClient: &http.Client{Transport: mock}},
		Store:  store, // read at first use, and every new token is saved before use
	}
	tok, err := src.Token()
	if err != nil {
		log.Fatal(err)
	}
	saved, _ := store.Load(context.Background())
	fmt.Println(tok.AccessToken == saved.AccessToken, saved.RefreshToken)
	// Output: true new-refresh
}

func ExampleAPIKeyTransport() {
	client := &http.Client{Transport: &pandadocauth.APIKeyTransport{
		Key:  "my-api-key",
		Base: fakePandaDoc(), // omit to reach PandaDoc
	}}
	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	// Output: 200
}
