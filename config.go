package pandadocauth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// AuthURL is PandaDoc's authorization endpoint, where the user grants
// consent in the browser.
const AuthURL = "https://app.pandadoc.com/oauth2/authorize"

// TokenURL is PandaDoc's token endpoint, used for the authorization-code
// and refresh-token grants.
const TokenURL = "https://api.pandadoc.com/oauth2/access_token"

// Endpoint is PandaDoc's endpoint for golang.org/x/oauth2 users.
// PandaDoc expects the client credentials in the form body, so
// AuthStyle is oauth2.AuthStyleInParams.
var Endpoint = oauth2.Endpoint{
	AuthURL:   AuthURL,
	TokenURL:  TokenURL,
	AuthStyle: oauth2.AuthStyleInParams,
}

// defaultScopes are the scopes PandaDoc documents for API access.
var defaultScopes = []string{"read", "write"}

// defaultHTTPClient is used for token-endpoint calls when Config.HTTPClient
// is nil. Unlike http.DefaultClient it has a finite timeout, so a hung
// token endpoint cannot hold a refresh forever.
var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// Config describes a PandaDoc OAuth 2.0 application: its credentials and
// where to reach PandaDoc. The zero value of every optional field is a
// sensible default. A Config must not be modified once it is in use; it
// is safe for concurrent use after that.
type Config struct {
	// ClientID is the application's client ID from the PandaDoc
	// developer dashboard.
	ClientID string

	// ClientSecret is the application's client secret. It is sent only
	// in the form body of token-endpoint requests and never appears in
	// an error, a log line or the output of String.
	ClientSecret string

	// RedirectURL is the URL PandaDoc redirects to after consent. It must
	// match one of the application's configured redirect URIs. When set,
	// it is sent with the authorization-code grant too.
	RedirectURL string

	// Scopes lists the requested scopes. Nil means "read" and "write":
	// the authorization URL then reads scope=read+write, as PandaDoc
	// documents. The token endpoint is sent a scope only when Scopes is
	// set explicitly.
	Scopes []string

	// TokenURL overrides the token endpoint. Empty means TokenURL.
	TokenURL string

	// AuthURL overrides the authorization endpoint. Empty means AuthURL.
	AuthURL string

	// HTTPClient makes the token-endpoint requests. Nil means the
	// *http.Client carried by the context under oauth2.HTTPClient, if
	// any, else a client with a 30-second timeout (never
	// http.DefaultClient, which has none).
	HTTPClient *http.Client
}

// String describes c without its client secret.
func (c Config) String() string {
	secret := ""
	if c.ClientSecret != "" {
		secret = redacted
	}
	return fmt.Sprintf("pandadocauth.Config{ClientID: %q, ClientSecret: %q, RedirectURL: %q, Scopes: %q, TokenURL: %q, AuthURL: %q}",
		c.ClientID, secret, c.RedirectURL, c.Scopes, c.tokenURL(), c.authURL())
}

// GoString is like String, for the %#v verb.
func (c Config) GoString() string { return c.String() }

// LogValue is like String, for log/slog.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes c without its client secret and HTTP client.
// Decoding is unchanged: a Config can still be read from JSON.
func (c Config) MarshalJSON() ([]byte, error) {
	secret := ""
	if c.ClientSecret != "" {
		secret = redacted
	}
	return json.Marshal(struct {
		ClientID     string
		ClientSecret string   `json:",omitempty"`
		RedirectURL  string   `json:",omitempty"`
		Scopes       []string `json:",omitempty"`
		TokenURL     string   `json:",omitempty"`
		AuthURL      string   `json:",omitempty"`
	}{c.ClientID, secret, c.RedirectURL, c.Scopes, c.TokenURL, c.AuthURL})
}

func (c *Config) tokenURL() string {
	if c.TokenURL != "" {
		return c.TokenURL
	}
	return TokenURL
}

func (c *Config) authURL() string {
	if c.AuthURL != "" {
		return c.AuthURL
	}
	return AuthURL
}

func (c *Config) httpClient(ctx context.Context) *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && hc != nil {
		return hc
	}
	return defaultHTTPClient
}

// AuthCodeURL returns the URL of PandaDoc's consent page. state is an
// opaque value that PandaDoc returns with the code on the redirect; use a
// fresh random value per login and check it on the way back (empty omits
// it).
func (c *Config) AuthCodeURL(state string) string {
	scopes := c.Scopes
	if len(scopes) == 0 {
		scopes = defaultScopes
	}
	v := url.Values{
		"client_id":     {c.ClientID},
		"response_type": {"code"},
		"scope":         {strings.Join(scopes, " ")},
	}
	if c.RedirectURL != "" {
		v.Set("redirect_uri", c.RedirectURL)
	}
	if state != "" {
		v.Set("state", state)
	}
	base := c.authURL()
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + v.Encode()
}

// Exchange trades an authorization code for a token with one
// authorization_code grant request. Codes are single-use, so a failed
// exchange is never retried. Token-endpoint rejections are returned as
// errors wrapping *oauth2.RetrieveError.
func (c *Config) Exchange(ctx context.Context, code string) (*oauth2.Token, error) {
	if code == "" {
		return nil, fmt.Errorf("pandadocauth: exchange: %w", ErrEmptyCode)
	}
	v := c.form("authorization_code")
	v.Set("code", code)
	if c.RedirectURL != "" {
		v.Set("redirect_uri", c.RedirectURL)
	}
	tok, err := c.post(ctx, v, time.Now)
	return tok, err.unwrap()
}

// Refresh makes one refresh_token grant request and returns the new
// token. It has no cache and no retry; TokenSource adds both. When the
// response carries no refresh token, the returned token keeps
// refreshToken, so the newest refresh token is never dropped.
func (c *Config) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	tok, err := c.refreshAttempt(ctx, refreshToken, time.Now)
	return tok, err.unwrap()
}

// refreshAttempt is one refresh POST, reporting whether its failure may be
// retried.
func (c *Config) refreshAttempt(ctx context.Context, refreshToken string, now func() time.Time) (*oauth2.Token, *attemptError) {
	if refreshToken == "" {
		return nil, &attemptError{err: fmt.Errorf("pandadocauth: refresh: %w", ErrNoRefreshToken)}
	}
	v := c.form("refresh_token")
	v.Set("refresh_token", refreshToken)
	tok, err := c.post(ctx, v, now)
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	}
	return tok, nil
}

func (c *Config) form(grantType string) url.Values {
	v := url.Values{
		"grant_type":    {grantType},
		"client_id":     {c.ClientID},
		"client_secret": {c.ClientSecret},
	}
	if len(c.Scopes) > 0 {
		v.Set("scope", strings.Join(c.Scopes, " "))
	}
	return v
}

// TokenSource returns a TokenSource for the grant whose token is t. It is
// shorthand for &TokenSource{Config: c, Initial: t}; set Store,
// EarlyRefresh or Logger on the result before its first use.
func (c *Config) TokenSource(t *oauth2.Token) *TokenSource {
	return &TokenSource{Config: c, Initial: t}
}

// Client returns an *http.Client that authenticates every request with
// the grant whose token is t, refreshing it as needed. For more control,
// build a TokenSource and a Transport.
func (c *Config) Client(t *oauth2.Token) *http.Client {
	return NewClient(nil, c.TokenSource(t))
}
