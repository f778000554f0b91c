package pandadocauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"
)

const (
	// maxAttempts is how many token-endpoint requests one refresh makes
	// at most when failures are transient.
	maxAttempts = 3

	// maxBodyBytes bounds how much of a token-endpoint response is read.
	maxBodyBytes = 1 << 20
	// maxExpiresIn is the largest expires_in accepted: ten years.
	// PandaDoc's tokens live one year (31535999 s).
	maxExpiresIn = 10 * 365 * 24 * 60 * 60
	// maxDescription bounds the error_description quoted in an error.
	maxDescription = 200
	// maxErrorBody bounds the excerpt of a refused answer that a
	// RetrieveError keeps (and a failing grant remembers).
	maxErrorBody = 4 << 10
	// maxErrorMember bounds error, error_description and error_uri as a
	// RetrieveError keeps them.
	maxErrorMember = 1 << 10
)

// Exchange trades an authorization code for a token with one
// authorization_code grant request. Codes are single-use, so a failed
// exchange is never retried. An empty ClientID or ClientSecret is an
// error, and nothing is sent. Token-endpoint rejections are returned as
// errors wrapping *oauth2.RetrieveError.
//
// opts are golang.org/x/oauth2's options, with its semantics: each sets a
// form parameter of the request, over grant_type, code and redirect_uri
// but not over the client credentials. The one that matters is
// oauth2.VerifierOption, the PKCE verifier whose challenge went to
// AuthCodeURL. Nil options are ignored.
func (c *Config) Exchange(ctx context.Context, code string, opts ...oauth2.AuthCodeOption) (*oauth2.Token, error) {
	if code == "" {
		return nil, fmt.Errorf("pandadocauth: exchange: %w", ErrEmptyCode)
	}
	if err := c.checkCredentials(); err != nil {
		return nil, err
	}
	tok, err := c.post(ctx, c.exchangeForm(code, authCodeOptionValues(opts)), time.Now)
	return tok, err.unwrap()
}

// Refresh makes one refresh_token grant request and returns the new
// token. It has no cache and no retry; TokenSource adds both. An empty
// ClientID or ClientSecret is an error, and nothing is sent. When the
// response carries no refresh token, the returned token keeps
// refreshToken, so the newest refresh token is never dropped.
func (c *Config) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	if err := c.checkCredentials(); err != nil {
		return nil, err
	}
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

// form is the part of every token-endpoint form that says who asks:
// PandaDoc expects the client credentials in the body.
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

// exchangeForm is the authorization_code grant's form. extra are the
// AuthCodeOptions' parameters: they may set any parameter but the client
// credentials, as in golang.org/x/oauth2.
func (c *Config) exchangeForm(code string, extra url.Values) url.Values {
	v := c.form("authorization_code")
	v.Set("code", code)
	if c.RedirectURL != "" {
		v.Set("redirect_uri", c.RedirectURL)
	}
	for k, vs := range extra {
		if k != "client_id" && k != "client_secret" {
			v[k] = vs
		}
	}
	return v
}

// post sends one form to the token endpoint and parses the answer.
func (c *Config) post(ctx context.Context, form url.Values, now func() time.Time) (*oauth2.Token, *attemptError) {
	if err := c.checkCredentials(); err != nil {
		return nil, &attemptError{err: err}
	}
	secrets := []string{form.Get("client_secret"), form.Get("refresh_token"), form.Get("code"), form.Get("code_verifier")}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &attemptError{err: fmt.Errorf("pandadocauth: token request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if err := checkSecure(req.URL); err != nil {
		return nil, &attemptError{err: fmt.Errorf("pandadocauth: token endpoint: %w", err)}
	}
	// A redirect would re-send the form, credentials included, wherever
	// it points: the token endpoint is called where configured, or not.
	hc := *c.httpClient(ctx)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		// A *url.Error names the token URL, which carries no secret: the
		// credentials travel in the body.
		// Transient also when the flight's own deadline cut it: a hung
		// endpoint is an outage, not a refusal.
		return nil, &attemptError{
			err:       fmt.Errorf("pandadocauth: token endpoint request failed: %w", err),
			transient: true,
		}
	}
	return readTokenResponse(ctx, resp, secrets, now())
}

// readTokenResponse reads and closes a token-endpoint response. secrets
// are the values sent (the refresh token second), redacted from anything
// the error keeps.
func readTokenResponse(ctx context.Context, resp *http.Response, secrets []string, now time.Time) (*oauth2.Token, *attemptError) {
	defer resp.Body.Close()
	// Read past the limit by the longest form of a secret, so that a
	// secret straddling the limit is redacted whole before any cut.
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, int64(maxBodyBytes+1+longest(secrets))))
	// A refused answer may still carry a new refresh token: the one sent
	// may be spent then, and the new one must not be thrown away.
	rotated := rotatedIn(body, secrets[1])
	if rotated != "" {
		secrets = append(secrets, rotated)
	}
	status := resp.StatusCode
	if status < 200 || status > 299 {
		// A failure to read an error body changes nothing: the status
		// decides.
		ae := rejection(resp, body, secrets, now)
		ae.rotated = rotated
		return nil, ae
	}
	if readErr != nil {
		return nil, &attemptError{
			err:       fmt.Errorf("pandadocauth: reading token response: %w", readErr),
			transient: true,
			rotated:   rotated,
		}
	}
	if len(body) > maxBodyBytes {
		return nil, &attemptError{err: fmt.Errorf("pandadocauth: %w: body exceeds %d bytes", ErrMalformedResponse, maxBodyBytes)}
	}
	tok, err := parseToken(body, now)
	if err != nil {
		if tr, ok := err.(*tokenRejection); ok {
			// The body may hold a token beside the error: keep only the
			// error's members.
			errBody, _ := json.Marshal(map[string]string{"error": tr.code, "error_description": tr.description, "error_uri": tr.uri})
			re := &oauth2.RetrieveError{
				Response:         redactResponse(resp, secrets),
				Body:             excerpt(redact(errBody, secrets)),
				ErrorCode:        clip(redactString(printable(tr.code), secrets)),
				ErrorDescription: clip(redactString(printable(tr.description), secrets)),
				ErrorURI:         clip(redactString(printable(tr.uri), secrets)),
			}
			return nil, &attemptError{err: &endpointError{msg: rejectionMessage(re, body, secrets), re: re, malformed: true}, rotated: rotated}
		}
		return nil, &attemptError{err: fmt.Errorf("pandadocauth: %w (status %d, content type %q): %w", ErrMalformedResponse, status, mediaType(resp), err), rotated: rotated}
	}
	return tok, nil
}

// rotatedIn returns the refresh token in body, a JSON object, if it is
// not sent, the one sent; else "".
func rotatedIn(body []byte, sent string) string {
	if sent == "" {
		return "" // not a refresh
	}
	var r struct {
		RefreshToken any `json:"refresh_token"`
	}
	if json.Unmarshal(body, &r) != nil {
		return ""
	}
	rt, _ := r.RefreshToken.(string)
	if rt == sent || !sendable(rt) {
		return ""
	}
	return rt
}

// rejection turns a non-2xx token-endpoint response into an error,
// transient for 5xx, 429 and 408. The error keeps a bounded excerpt of
// the body, redacted before it is cut.
func rejection(resp *http.Response, body []byte, secrets []string, now time.Time) *attemptError {
	re := &oauth2.RetrieveError{Response: redactResponse(resp, secrets), Body: excerpt(redact(body, secrets))}
	var e struct {
		Error            any    `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorURI         string `json:"error_uri"`
	}
	if json.Unmarshal(body, &e) == nil {
		if code, ok := e.Error.(string); ok {
			re.ErrorCode = clip(redactString(printable(code), secrets))
			re.ErrorDescription = clip(redactString(printable(e.ErrorDescription), secrets))
			re.ErrorURI = clip(redactString(printable(e.ErrorURI), secrets))
		}
	}
	status := resp.StatusCode
	ae := &attemptError{
		err:       &endpointError{msg: rejectionMessage(re, body, secrets), re: re},
		transient: status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout,
		throttled: status == http.StatusTooManyRequests,
	}
	if ae.transient {
		ra, _ := retryAfter(resp.Header, now)
		ae.retryAfter = min(ra, maxRetryAfter)
	}
	return ae
}

// excerpt returns the first maxErrorBody bytes of b, copied, so that a
// remembered failure does not keep a whole error page.
func excerpt(b []byte) []byte {
	return bytes.Clone(b[:min(len(b), maxErrorBody)])
}

// clip bounds a member of an error answer kept in a RetrieveError.
func clip(s string) string {
	if len(s) <= maxErrorMember {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrorMember], "") + "…"
}

// longest is the length of the longest form of a secret that redact
// replaces.
func longest(secrets []string) int {
	n := 0
	for _, s := range secrets {
		for _, e := range encodings(s) {
			n = max(n, len(e))
		}
	}
	return n
}

// redactResponse returns a shallow copy of resp whose reason phrase is
// redacted of secrets (a server may echo what it was sent there, and the
// RetrieveError's own Error method prints it), without the request that
// carried them.
func redactResponse(resp *http.Response, secrets []string) *http.Response {
	r := *resp
	r.Status = redactString(resp.Status, secrets)
	// The request's GetBody would replay the form, credentials included.
	r.Request = nil
	return &r
}

// rejectionMessage is the error message for a rejection. It is redacted
// after the quoting, so that no escape sequence put before a secret's
// remainder can spell the secret.
func rejectionMessage(re *oauth2.RetrieveError, body []byte, secrets []string) string {
	resp := re.Response
	var b strings.Builder
	b.WriteString("pandadocauth: token endpoint: ")
	b.WriteString(resp.Status)
	if resp.Status == "" {
		b.WriteString(strconv.Itoa(resp.StatusCode))
	}
	if re.ErrorCode != "" {
		b.WriteString(": ")
		b.WriteString(strconv.Quote(re.ErrorCode))
		if d := re.ErrorDescription; d != "" {
			if len(d) > maxDescription {
				d = d[:maxDescription] + "…"
			}
			b.WriteString(": ")
			b.WriteString(strconv.Quote(d))
		}
	} else {
		fmt.Fprintf(&b, " (%d-byte %s body)", len(body), mediaTypeOr(resp, "untyped"))
	}
	return redactString(b.String(), secrets)
}

func mediaType(resp *http.Response) string {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt
}

func mediaTypeOr(resp *http.Response, def string) string {
	if mt := mediaType(resp); mt != "" {
		return mt
	}
	return def
}

// tokenRejection is a 2xx response that carries an OAuth "error" member.
type tokenRejection struct{ code, description, uri string }

func (e *tokenRejection) Error() string {
	return "token endpoint returned error " + strconv.Quote(e.code)
}

// tokenResponse is PandaDoc's OAuth2AccessTokenResponse. No member is
// marked required by PandaDoc's specification.
type tokenResponse struct {
	AccessToken      string          `json:"access_token"`
	TokenType        string          `json:"token_type"`
	RefreshToken     string          `json:"refresh_token"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	Scope            any             `json:"scope"`
	Error            any             `json:"error"`
	ErrorDescription string          `json:"error_description"`
	ErrorURI         string          `json:"error_uri"`
}

// parseToken parses a 2xx token-endpoint body. It never quotes the body
// in its errors: a 2xx body may hold a token.
func parseToken(body []byte, now time.Time) (*oauth2.Token, error) {
	var r tokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, errors.New("body is not a JSON object")
	}
	if r.Error != nil {
		code, _ := r.Error.(string)
		if code == "" {
			code = "unknown_error"
		}
		return nil, &tokenRejection{code: code, description: r.ErrorDescription, uri: r.ErrorURI}
	}
	if r.AccessToken == "" {
		return nil, errors.New("no access_token")
	}
	if !sendable(r.AccessToken) {
		return nil, errors.New("access_token cannot be sent in a header (blank, or holds control characters)")
	}
	expiresIn, err := parseExpiresIn(r.ExpiresIn)
	if err != nil {
		return nil, err
	}
	tok := &oauth2.Token{
		AccessToken:  r.AccessToken,
		TokenType:    r.TokenType,
		RefreshToken: r.RefreshToken,
		ExpiresIn:    expiresIn,
	}
	if expiresIn > 0 {
		tok.Expiry = now.Add(time.Duration(expiresIn) * time.Second)
	}
	extra := map[string]any{}
	if json.Unmarshal(body, &extra) == nil {
		tok = tok.WithExtra(extra)
	}
	return tok, nil
}

// parseExpiresIn accepts an integer, a float or a numeric string. Absent
// or null is 0: no expiry known.
func parseExpiresIn(raw json.RawMessage) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, errors.New("expires_in is not a number")
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("expires_in is not a number")
	}
	if f < 0 {
		return 0, errors.New("expires_in is negative")
	}
	if f > maxExpiresIn {
		return 0, fmt.Errorf("expires_in exceeds %d seconds", maxExpiresIn)
	}
	// A fraction of a second still expires: round up.
	return int64(math.Ceil(f)), nil
}

// redact replaces every secret in b.
func redact(b []byte, secrets []string) []byte {
	for _, s := range secrets {
		for _, v := range encodings(s) {
			b = bytes.ReplaceAll(b, []byte(v), []byte(redacted))
		}
	}
	return b
}

// encodings are the forms in which an echoed secret may appear: as
// sent, form-encoded, JSON-escaped.
func encodings(s string) []string {
	if s == "" {
		return nil
	}
	j, _ := json.Marshal(s)
	return []string{s, url.QueryEscape(s), string(j[1 : len(j)-1]), strings.ReplaceAll(string(j[1:len(j)-1]), "/", `\/`)}
}

func redactString(v string, secrets []string) string {
	for _, s := range secrets {
		for _, e := range encodings(s) {
			v = strings.ReplaceAll(v, e, redacted)
		}
	}
	return v
}

// printable replaces what %q would escape other than quotes and
// backslashes (control characters, other unprintable runes, invalid
// UTF-8) with U+FFFD. RetrieveError's own Error method quotes ErrorCode
// and ErrorDescription, and an escape such as \x7f or \f put before the
// rest of a secret would spell the secret after quoting, past redaction.
func printable(v string) string {
	clean := true
	for _, r := range v {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(v, string(utf8.RuneError)))
}

// defaultHTTPClient is used for token-endpoint calls when Config.HTTPClient
// is nil. Unlike http.DefaultClient it has a finite timeout, so a hung
// token endpoint cannot hold a refresh forever.
var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

func (c *Config) httpClient(ctx context.Context) *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && hc != nil {
		return hc
	}
	return defaultHTTPClient
}
