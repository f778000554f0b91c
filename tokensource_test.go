package pandadocauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

func TestTokenSourceHotPath(t *testing.T) {
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if first.AccessToken != testAccess {
		t.Fatalf("got %q, want the initial token", first.AccessToken)
	}
	ct1, _ := ts.current(context.Background())
	ct2, _ := ts.current(context.Background())
	if ct1 != ct2 {
		t.Fatal("the cached snapshot changed between two reads of a valid token")
	}
	if ct1.header != "Bearer "+testAccess {
		t.Fatalf("header %q", ct1.header)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Token allocates %.1f times per call on the hot path, want 0", allocs)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d token POSTs for a valid token, want 0", n)
	}
}

func TestTokenSourceZeroExpiryNeverRefreshes(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, newTokenServer(t, 0), 0)
	clock.Advance(10 * 365 * 24 * time.Hour)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("Token() = %v, %v; want the initial token", tok, err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d token POSTs, want 0: a zero Expiry is valid until a 401", n)
	}
}

func TestTokenSourceShortLivedTokenWindow(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		lifetime time.Duration
		early    time.Duration
		at       time.Duration
		refresh  bool
	}{
		{"default window, long token, before it", time.Hour, 0, 54 * time.Minute, false},
		{"default window, long token, inside it", time.Hour, 0, 56 * time.Minute, true},
		{"60s token gets a 30s window, before it", time.Minute, 0, 29 * time.Second, false},
		{"60s token gets a 30s window, inside it", time.Minute, 0, 31 * time.Second, true},
		{"explicit window, short token", 10 * time.Second, time.Minute, 4 * time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, newTokenServer(t, int(tc.lifetime/time.Second)), tc.lifetime)
			ts.EarlyRefresh = tc.early
			clock.Advance(tc.at)
			tok, err := ts.Token()
			if err != nil || tok.AccessToken != testAccess {
				t.Fatalf("%v, %v; want the current token served", tok, err)
			}
			ts.Wait()
			if got, want := mt.GetCallCountInfo()[tokenCall], map[bool]int{false: 0, true: 1}[tc.refresh]; got != want {
				t.Errorf("%d POSTs, want %d", got, want)
			}
			if tc.refresh {
				// The refreshed token is not itself due: no loop.
				for range 10 {
					ts.Token()
				}
				ts.Wait()
				if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
					t.Errorf("%d POSTs after the refresh, want 1", got)
				}
			}
		})
	}
}

func TestTokenSourceBlocksOnlyNearExpiry(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, clock := newSource(t, srv, 10*time.Minute)
	// Within blockingSkew of expiry the old token is no longer served.
	clock.Advance(10*time.Minute - blockingSkew + time.Second)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v; want a new token", tok, err)
	}
}

func TestTokenSourceNoSecretInStrings(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	ts.Token()
	conf := *ts.Config
	for _, s := range []string{
		fmt.Sprint(ts), fmt.Sprintf("%+v", ts), fmt.Sprintf("%#v", ts), fmt.Sprintf("%v", *ts.Config),
		fmt.Sprintf("%+v", conf), fmt.Sprintf("%#v", &conf), fmt.Sprint(APIKeyTransport{Key: "key-SECRET"}),
		fmt.Sprintf("%+v", &APIKeyTransport{Key: "key-SECRET"}),
	} {
		assertNoSecret(t, "String", s)
	}
}

func TestTokenSourceNoSecretInLogsOrJSON(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	ts.Token()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("start", "source", ts, "config", ts.Config, "configValue", *ts.Config, "apikey", APIKeyTransport{Key: "key-SECRET"})
	slog.New(slog.NewTextHandler(&buf, nil)).Info("start", "source", ts, "config", ts.Config, "apikey", &APIKeyTransport{Key: "key-SECRET"})
	for _, v := range []any{ts, ts.Config, *ts.Config, APIKeyTransport{Key: "key-SECRET"}, &APIKeyTransport{Key: "key-SECRET"}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		buf.Write(b)
	}
	if !strings.Contains(buf.String(), testClientID) {
		t.Errorf("the client ID should still show: %s", buf.String())
	}
	assertNoSecret(t, "log and JSON output", buf.String())
}

func TestTokenSourceInitialFirst(t *testing.T) {
	t.Parallel()
	ts, mt, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-stored", Expiry: time.Now().Add(time.Hour)}}
	ts.Store = store
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("%v, %v; want Initial", tok, err)
	}
	if store.loads != 0 || mt.GetTotalCallCount() != 0 {
		t.Errorf("%d Loads and %d POSTs before a refresh was due, want 0", store.loads, mt.GetTotalCallCount())
	}
}

func TestTokenSourceEarlyRefreshOff(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, newTokenServer(t, 3600), time.Hour)
	ts.EarlyRefresh = -1
	clock.Advance(time.Hour - blockingSkew - time.Second)
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatal("want the current token")
	}
	ts.Wait()
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d POSTs with early refresh off, want 0", n)
	}
	clock.Advance(2 * time.Second)
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Errorf("%v, %v; want a new token at expiry", tok, err)
	}
}

// TestTokenSourceFarFutureExpiry: a deadline beyond what a Duration holds
// saturates instead of wrapping to "expired".
func TestTokenSourceFarFutureExpiry(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	ts := &TokenSource{Config: testConfig(mt), Initial: &oauth2.Token{
		AccessToken: testAccess, TokenType: "Bearer",
		Expiry: time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC),
	}} // real clock
	t.Cleanup(ts.Wait)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("%v, %v; want the valid Initial token", tok, err)
	}
}

// TestTokenSourceEarlyRefreshOffShortToken: with early refresh off, a
// token that lives less than twice blockingSkew is still usable at once.
func TestTokenSourceEarlyRefreshOffShortToken(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, newTokenServer(t, 5), time.Hour)
	ts.EarlyRefresh = -1
	clock.Advance(2 * time.Hour)
	for range 5 {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs for 5 calls at one instant, want 1", n)
	}
}

// TestTokenSourceCopiedByValueLeaksNothing: a TokenSource copied by value
// has no redacting methods (they have pointer receivers), so its fields
// are encoded as they are: Initial must not be. (go vet's copylocks check
// reports such copies in code; reflect makes one here.)
func TestTokenSourceCopiedByValueLeaksNothing(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	ts.Token()
	copied := reflect.ValueOf(ts).Elem().Interface() // a TokenSource, not a *TokenSource
	b, err := json.Marshal(copied)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "json.Marshal of a copy", string(b))
	for name, h := range map[string]func(io.Writer) slog.Handler{
		"JSON": func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
		"text": func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
	} {
		var buf syncBuffer
		slog.New(h(&buf)).Info("source", "ts", copied)
		assertNoSecret(t, "slog "+name+" of a copy", buf.String())
	}
	assertNoSecret(t, "%+v of a copy", fmt.Sprintf("%+v %#v %v", copied, copied, copied))
}

// TestRefreshedTokenIsCompact: a refreshed grant keeps one copy of its
// token: no raw answer beside it (Extra), and an access token that shares
// the bytes of the header sent.
func TestRefreshedTokenIsCompact(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, clock := newSource(t, srv, time.Hour)
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("expires_in") != nil || tok.Extra("access_token") != nil {
		t.Error("the token keeps the endpoint's raw answer")
	}
	ct := ts.cache.Load()
	if unsafe.StringData(ct.header[len("Bearer "):]) != unsafe.StringData(tok.AccessToken) {
		t.Error("the access token is a second copy of the header's bytes")
	}
	if tok.Type() != "Bearer" || tok.RefreshToken != "rt-SECRET-1" || tok.ExpiresIn != 3600 {
		t.Errorf("token %+v", tok)
	}
}
