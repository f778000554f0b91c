package pandadocauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

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

// Config describes a PandaDoc OAuth 2.0 application: its credentials and
// where to reach PandaDoc. The zero value of every optional field is a
// sensible default. A Config must not be modified once it is in use; it
// is safe for concurrent use after that.
//
// Config reads like golang.org/x/oauth2's Config, and AuthCodeURL and
// Exchange take its AuthCodeOptions (PKCE, SetAuthURLParam). It differs
// where PandaDoc or a long-running service asks for it:
//
//   - Client(t) and TokenSource(t) take no context. x/oauth2's keep the
//     context for every later refresh, so a request-scoped context
//     passed there breaks refreshes once it ends. Here the HTTP client
//     is the HTTPClient field, and each call has its own context:
//     TokenContext(ctx), and the request's context through Transport.
//   - There is no Endpoint and no AuthStyle: PandaDoc reads the client
//     credentials from the form body only, so they are always sent
//     there. AuthURL and TokenURL override the endpoints, and Endpoint
//     (the package variable) serves x/oauth2 users.
//   - Exchange is never retried, since a code is single-use, and neither
//     is Refresh; TokenSource retries refreshes, with back-off.
//   - Refresh(ctx, refreshToken) is one refresh_token grant, which
//     x/oauth2 has no call for.
//   - Nil Scopes means "read" and "write", PandaDoc's API scopes.
//   - PandaDoc has no password, client-credentials or device grant, so
//     Config has no PasswordCredentialsToken or DeviceAuth.
//
// Config's JSON form is for display: json.Marshal writes "[redacted]" in
// place of the client secret and leaves out HTTPClient, and decoding
// JSON that carries "[redacted]" as the secret fails, since it would
// set the secret to that placeholder. Read the secret from where it is
// kept.
type Config struct {
	// ClientID is the application's client ID from the PandaDoc
	// developer dashboard. Required: Exchange, Refresh and the refreshes
	// of a Grants fail without it, naming the field, before anything is
	// sent.
	ClientID string

	// ClientSecret is the application's client secret. It is sent only
	// in the form body of token-endpoint requests and never appears in
	// an error, a log line or the output of String. Required like
	// ClientID.
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

// MarshalJSON encodes c without its client secret, which it replaces
// with "[redacted]" when set, and without its HTTP client. The result
// does not decode back into a working Config; see UnmarshalJSON.
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

// UnmarshalJSON decodes c as encoding/json does by default, but refuses
// JSON whose ClientSecret is "[redacted]": MarshalJSON writes that in
// place of the secret, so the JSON no longer holds it, and decoding it
// would set the secret to the placeholder and fail every token request
// with invalid_client. On error, c is unchanged.
func (c *Config) UnmarshalJSON(b []byte) error {
	type plain Config // Config without its methods
	p := plain(*c)
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("pandadocauth: decoding Config: %w", err)
	}
	if p.ClientSecret == redacted {
		return errRedactedSecret
	}
	*c = Config(p)
	return nil
}

// checkCredentials reports an empty ClientID or ClientSecret, naming the
// field, so that no token-endpoint request goes out without them: the
// answer would be invalid_client, after the refresh token or the code
// had been sent for nothing.
func (c *Config) checkCredentials() error {
	switch {
	case c.ClientID == "" && c.ClientSecret == "":
		return errors.New("pandadocauth: Config.ClientID and Config.ClientSecret are empty: set them to the application's client ID and secret from the PandaDoc developer dashboard")
	case c.ClientID == "":
		return errors.New("pandadocauth: Config.ClientID is empty: set it to the application's client ID from the PandaDoc developer dashboard")
	case c.ClientSecret == "":
		return errors.New("pandadocauth: Config.ClientSecret is empty: set it to the application's client secret from the PandaDoc developer dashboard")
	}
	return nil
}

// errRedactedSecret is UnmarshalJSON's error for a round trip through
// MarshalJSON.
var errRedactedSecret = errors.New(`pandadocauth: decoding Config: ClientSecret is "` + redacted +
	`", the placeholder that json.Marshal writes in place of the secret; set ClientSecret from where the secret is kept`)

func (c *Config) authURL() string {
	if c.AuthURL != "" {
		return c.AuthURL
	}
	return AuthURL
}

// AuthCodeURL returns the URL of PandaDoc's consent page. state is an
// opaque value that PandaDoc returns with the code on the redirect; use a
// fresh random value per login and check it on the way back (empty omits
// it).
//
// opts are golang.org/x/oauth2's options, with its semantics: each sets a
// query parameter, after (and over) the ones above. Use them for PKCE,
// with the verifier kept for Exchange:
//
//	verifier := oauth2.GenerateVerifier()
//	u := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
//	// … on the redirect:
//	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
//
// or for any other parameter, with oauth2.SetAuthURLParam. Nil options
// are ignored.
func (c *Config) AuthCodeURL(state string, opts ...oauth2.AuthCodeOption) string {
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
	for k, vs := range authCodeOptionValues(opts) {
		v[k] = vs
	}
	base := c.authURL()
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + v.Encode()
}

// optionProbe builds URLs from which authCodeOptionValues reads what
// options set.
var optionProbe = &oauth2.Config{Endpoint: oauth2.Endpoint{AuthURL: "https://option.probe.invalid/"}}

// authCodeOptionValues returns the parameters that opts set, in the order
// golang.org/x/oauth2 applies them (a later option wins). An
// oauth2.AuthCodeOption sets them through an unexported method, so they
// are read back from the authorization URLs that a bare oauth2.Config
// builds with and without them: the parameters that differ are the
// options'. An option that sets a parameter to the probe's own value
// (response_type=code) sets nothing that matters.
func authCodeOptionValues(opts []oauth2.AuthCodeOption) url.Values {
	live := make([]oauth2.AuthCodeOption, 0, len(opts))
	for _, o := range opts {
		if o != nil {
			live = append(live, o)
		}
	}
	if len(live) == 0 {
		return nil
	}
	without := probeQuery(optionProbe.AuthCodeURL(""))
	with := probeQuery(optionProbe.AuthCodeURL("", live...))
	set := url.Values{}
	for k, vs := range with {
		if !slices.Equal(vs, without[k]) {
			set[k] = vs
		}
	}
	return set
}

// probeQuery returns the query of a URL that optionProbe built.
func probeQuery(u string) url.Values {
	_, raw, _ := strings.Cut(u, "?")
	q, _ := url.ParseQuery(raw) // built by url.Values.Encode: it parses
	return q
}

// redacted stands in for secrets in errors and descriptions.
const redacted = "[redacted]"

// tokenURL is the token endpoint: TokenURL, unless c names another.
func (c *Config) tokenURL() string {
	if c.TokenURL != "" {
		return c.TokenURL
	}
	return TokenURL
}
