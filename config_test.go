package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

func TestConfigAuthCodeURL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		conf Config
		arg  string
		want string
	}{
		{"defaults", Config{ClientID: "id"}, "",
			"https://app.pandadoc.com/oauth2/authorize?client_id=id&response_type=code&scope=read+write"},
		{"redirect and state", Config{ClientID: "id", RedirectURL: "http://127.0.0.1:8765/callback"}, "xyz",
			"https://app.pandadoc.com/oauth2/authorize?client_id=id&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&response_type=code&scope=read+write&state=xyz"},
		{"explicit scopes", Config{ClientID: "id", Scopes: []string{"read"}}, "",
			"https://app.pandadoc.com/oauth2/authorize?client_id=id&response_type=code&scope=read"},
		{"own auth URL", Config{ClientID: "id", AuthURL: "http://127.0.0.1:9/oauth2/authorize"}, "s",
			"http://127.0.0.1:9/oauth2/authorize?client_id=id&response_type=code&scope=read+write&state=s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.conf.AuthCodeURL(tc.arg); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if Endpoint.AuthStyle != oauth2.AuthStyleInParams || Endpoint.TokenURL != TokenURL || Endpoint.AuthURL != AuthURL {
		t.Errorf("Endpoint = %+v", Endpoint)
	}
}

func TestConfigTokenRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		conf func(*Config)
		call func(*Config) (*oauth2.Token, error)
		want url.Values
	}{
		{"exchange", func(c *Config) {},
			func(c *Config) (*oauth2.Token, error) { return c.Exchange(context.Background(), "code-SECRET") },
			url.Values{"grant_type": {"authorization_code"}, "client_id": {testClientID}, "client_secret": {testClientSecret}, "code": {"code-SECRET"}}},
		{"exchange with redirect and scopes", func(c *Config) { c.RedirectURL = "http://127.0.0.1/cb"; c.Scopes = []string{"read", "write"} },
			func(c *Config) (*oauth2.Token, error) { return c.Exchange(context.Background(), "code-SECRET") },
			url.Values{"grant_type": {"authorization_code"}, "client_id": {testClientID}, "client_secret": {testClientSecret}, "code": {"code-SECRET"}, "redirect_uri": {"http://127.0.0.1/cb"}, "scope": {"read write"}}},
		{"refresh", func(c *Config) {},
			func(c *Config) (*oauth2.Token, error) { return c.Refresh(context.Background(), testRefresh) },
			url.Values{"grant_type": {"refresh_token"}, "client_id": {testClientID}, "client_secret": {testClientSecret}, "refresh_token": {testRefresh}}},
		{"refresh with scope", func(c *Config) { c.Scopes = []string{"read"} },
			func(c *Config) (*oauth2.Token, error) { return c.Refresh(context.Background(), testRefresh) },
			url.Values{"grant_type": {"refresh_token"}, "client_id": {testClientID}, "client_secret": {testClientSecret}, "refresh_token": {testRefresh}, "scope": {"read"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mt := httpmock.NewMockTransport()
			var got url.Values
			var header http.Header
			mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
				req.ParseForm()
				got, header = req.PostForm, req.Header
				return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1","token_type":"Bearer","expires_in":31535999,"scope":"read+write","refresh_token":"rt-SECRET-1"}`), nil
			})
			conf := testConfig(mt)
			tc.conf(conf)
			before := time.Now()
			tok, err := tc.call(conf)
			if err != nil {
				t.Fatal(err)
			}
			if got.Encode() != tc.want.Encode() {
				t.Errorf("form\n got  %s\n want %s", got.Encode(), tc.want.Encode())
			}
			if header.Get("Authorization") != "" || header.Get("Content-Type") != "application/x-www-form-urlencoded" || header.Get("Accept") != "application/json" {
				t.Errorf("headers %v", header)
			}
			if tok.AccessToken != "at-SECRET-1" || tok.RefreshToken != "rt-SECRET-1" || tok.Type() != "Bearer" || tok.Extra("scope") != "read+write" {
				t.Errorf("token %+v", tok)
			}
			if exp := before.Add(31535999 * time.Second); tok.Expiry.Before(exp) || tok.Expiry.After(exp.Add(time.Minute)) {
				t.Errorf("expiry %v", tok.Expiry)
			}
		})
	}
}

func TestConfigExchangeIsNeverRetried(t *testing.T) {
	t.Parallel()
	for _, status := range []int{500, 503, 429} {
		mt := httpmock.NewMockTransport()
		mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(status, "busy"))
		_, err := testConfig(mt).Exchange(context.Background(), "code-SECRET")
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != status {
			t.Errorf("%d: %v, want a RetrieveError", status, err)
		}
		if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
			t.Errorf("%d: %d POSTs, want 1: codes are single-use", status, n)
		}
		assertNoSecret(t, "error", err.Error())
	}
	if _, err := (&Config{}).Exchange(context.Background(), ""); !errors.Is(err, ErrEmptyCode) {
		t.Errorf("empty code: %v", err)
	}
}

func TestConfigHTTPClientFromContext(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(200, `{"access_token":"at-SECRET-1"}`))
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: mt})
	conf := &Config{ClientID: testClientID, ClientSecret: testClientSecret}
	if _, err := conf.Refresh(ctx, testRefresh); err != nil {
		t.Fatal(err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs through the context's client, want 1", n)
	}
	if defaultHTTPClient.Timeout <= 0 || defaultHTTPClient == http.DefaultClient {
		t.Error("the default token client must have a finite timeout")
	}
}

func TestConfigRefusesPlainHTTPTokenURL(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	conf := testConfig(mt)
	conf.TokenURL = "http://api.pandadoc.com/oauth2/access_token"
	if _, err := conf.Refresh(context.Background(), testRefresh); !errors.Is(err, ErrInsecureRequest) {
		t.Errorf("%v, want ErrInsecureRequest", err)
	}
	if n := mt.GetTotalCallCount(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestConfigAuthCodeURLOptions(t *testing.T) {
	t.Parallel()
	conf := &Config{ClientID: "id", RedirectURL: "http://127.0.0.1:8765/callback"}
	verifier := oauth2.GenerateVerifier()
	cases := []struct {
		name string
		opts []oauth2.AuthCodeOption
		want map[string]string // parameters expected, "" for absent
	}{
		{"none", nil, map[string]string{"code_challenge": "", "client_id": "id", "scope": "read write", "state": "st"}},
		{"PKCE S256", []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)},
			map[string]string{"code_challenge": oauth2.S256ChallengeFromVerifier(verifier), "code_challenge_method": "S256", "code_verifier": "", "state": "st"}},
		{"param and offline", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "consent"), oauth2.AccessTypeOffline},
			map[string]string{"prompt": "consent", "access_type": "offline", "client_id": "id"}},
		{"options override", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("scope", "read"), oauth2.SetAuthURLParam("state", "other"), oauth2.SetAuthURLParam("client_id", "id2")},
			map[string]string{"scope": "read", "state": "other", "client_id": "id2", "response_type": "code"}},
		{"later option wins", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "a"), oauth2.SetAuthURLParam("prompt", "b")},
			map[string]string{"prompt": "b"}},
		{"nil ignored", []oauth2.AuthCodeOption{nil, oauth2.SetAuthURLParam("prompt", "none"), nil},
			map[string]string{"prompt": "none"}},
		{"special characters", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("login_hint", "a b&c=d?é")},
			map[string]string{"login_hint": "a b&c=d?é"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(conf.AuthCodeURL("st", tc.opts...))
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			for k, want := range tc.want {
				if got := q.Get(k); got != want || (want == "") != !q.Has(k) {
					t.Errorf("%s = %q (present %v), want %q", k, got, q.Has(k), want)
				}
			}
			// The option parameters are those x/oauth2 would send.
			var live []oauth2.AuthCodeOption
			for _, o := range tc.opts {
				if o != nil {
					live = append(live, o)
				}
			}
			x := &oauth2.Config{ClientID: "id", RedirectURL: conf.RedirectURL, Scopes: []string{"read", "write"}, Endpoint: Endpoint}
			xu, _ := url.Parse(x.AuthCodeURL("st", live...))
			if got, want := q.Encode(), xu.Query().Encode(); got != want {
				t.Errorf("query\n got  %s\n x/oauth2 %s", got, want)
			}
		})
	}
}

func TestConfigExchangeOptions(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	var got url.Values
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		got = req.PostForm
		return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1","token_type":"Bearer","expires_in":60,"refresh_token":"rt-SECRET-1"}`), nil
	})
	conf := testConfig(mt)
	conf.RedirectURL = "http://127.0.0.1:8765/callback"
	verifier := oauth2.GenerateVerifier()
	_, err := conf.Exchange(context.Background(), "code-SECRET", nil,
		oauth2.VerifierOption(verifier),
		oauth2.SetAuthURLParam("redirect_uri", "http://127.0.0.1:9999/callback"),
		oauth2.SetAuthURLParam("client_secret", "not-the-secret"),
		oauth2.SetAuthURLParam("client_id", "not-the-id"))
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {"code-SECRET"},
		"code_verifier": {verifier},
		"redirect_uri":  {"http://127.0.0.1:9999/callback"},
		"client_id":     {testClientID},
		"client_secret": {testClientSecret},
	}
	if got.Encode() != want.Encode() {
		t.Errorf("form\n got  %s\n want %s", got.Encode(), want.Encode())
	}
}

func TestConfigJSON(t *testing.T) {
	t.Parallel()
	conf := Config{ClientID: "id", ClientSecret: testClientSecret, RedirectURL: "http://127.0.0.1/cb", Scopes: []string{"read"}}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "JSON", string(b))
	if !strings.Contains(string(b), `"ClientSecret":"[redacted]"`) {
		t.Errorf("JSON = %s, want the secret shown as redacted", b)
	}

	// The round trip is refused, and leaves the Config as it was.
	back := Config{ClientID: "before"}
	err = json.Unmarshal(b, &back)
	if err == nil || !strings.Contains(err.Error(), "pandadocauth:") || !strings.Contains(err.Error(), "placeholder") {
		t.Fatalf("decoding the redacted JSON: %v, want a clear error", err)
	}
	if back.ClientID != "before" || back.ClientSecret != "" {
		t.Errorf("Config after a refused decode: %+v", back)
	}

	// JSON with a real secret, or none, decodes as before.
	var ok Config
	if err := json.Unmarshal([]byte(`{"ClientID":"id","ClientSecret":"s3cret","Scopes":["read"],"TokenURL":"https://t.test/"}`), &ok); err != nil {
		t.Fatal(err)
	}
	if ok.ClientID != "id" || ok.ClientSecret != "s3cret" || len(ok.Scopes) != 1 || ok.TokenURL != "https://t.test/" {
		t.Errorf("decoded %+v", ok)
	}
	var noSecret Config
	b, _ = json.Marshal(Config{ClientID: "id"})
	if err := json.Unmarshal(b, &noSecret); err != nil || noSecret.ClientID != "id" {
		t.Errorf("round trip without a secret: %+v, %v", noSecret, err)
	}
	if err := json.Unmarshal([]byte(`{"ClientID":5}`), &noSecret); err == nil || !strings.HasPrefix(err.Error(), "pandadocauth: ") {
		t.Errorf("bad JSON: %v", err)
	}
}

// TestConfigEmptyCredentials: Exchange and Refresh with an empty client
// ID or secret send nothing (a refresh token or a code sent without them
// is answered invalid_client) and name the empty field.
func TestConfigEmptyCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id, secret, want string
	}{
		{"", testClientSecret, "Config.ClientID is empty"},
		{testClientID, "", "Config.ClientSecret is empty"},
		{"", "", "Config.ClientID and Config.ClientSecret are empty"},
	} {
		for name, call := range map[string]func(*Config) (*oauth2.Token, error){
			"Exchange": func(c *Config) (*oauth2.Token, error) { return c.Exchange(context.Background(), "code-SECRET") },
			"Refresh":  func(c *Config) (*oauth2.Token, error) { return c.Refresh(context.Background(), testRefresh) },
		} {
			mt := httpmock.NewMockTransport()
			mt.RegisterResponder("POST", TokenURL, newTokenServer(t, 0).RoundTrip)
			c := testConfig(mt)
			c.ClientID, c.ClientSecret = tc.id, tc.secret
			_, err := call(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pandadocauth: ") {
				t.Errorf("%s: %v, want %q", name, err, tc.want)
			} else {
				assertNoSecret(t, "error", err.Error())
			}
			if n := mt.GetTotalCallCount(); n != 0 {
				t.Errorf("%s: %d requests sent without credentials", name, n)
			}
		}
	}
}

// TestTokenSourceEmptyCredentials: a TokenSource whose Config lacks a
// credential sends no refresh, and says which field is empty.
func TestTokenSourceEmptyCredentials(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, newTokenServer(t, 3600), time.Hour)
	ts.Config.ClientSecret = ""
	clock.Advance(2 * time.Hour)
	_, err := ts.Token()
	if err == nil || !strings.Contains(err.Error(), "Config.ClientSecret is empty") {
		t.Fatalf("got %v, want an error naming ClientSecret", err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d token POSTs without a client secret", n)
	}
}
