package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// defaultRedirectURL is where PandaDoc sends the browser back after
// consent. It must be one of the application's redirect URIs in PandaDoc.
const defaultRedirectURL = "http://127.0.0.1:8765/callback"

// shutdownTimeout bounds the wait for the callback server's connections
// to finish; then they are closed.
const shutdownTimeout = 2 * time.Second

const loginUsage = `Usage: pandadoc-oauth login [flags]

pandadoc-oauth login logs in to PandaDoc through the browser. It listens
on the redirect URL (a loopback address), prints PandaDoc's authorization
URL and opens it in the browser. When PandaDoc redirects back with an
authorization code, login exchanges it for a token, with PKCE (S256), and
saves the token to the token file. A redirect whose state does not belong
to this login is refused and ignored: login keeps waiting.

The redirect URL must match one of the application's redirect URIs in
PandaDoc exactly. Port 0 listens on a port the system picks, for servers
that accept a loopback redirect URI on any port (RFC 8252 section 7.3).
`

// Errors of the login callback.
var (
	errConsentDenied = errors.New("consent denied: access to PandaDoc was not granted")
	errNoCode        = errors.New("the redirect carries no authorization code")
)

func (c *cli) login(ctx context.Context, args []string) int {
	fs := c.newFlagSet("login")
	var f commonFlags
	f.register(fs)
	redirect := fs.String("redirect-url", defaultRedirectURL, "loopback `URL` PandaDoc redirects to after consent")
	noBrowser := fs.Bool("no-browser", false, "print the authorization URL without opening a browser")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up when the browser has not come back after this `duration`")
	pos, code, ok := c.parse(fs, loginUsage, args, false)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(fs, "unexpected arguments %q", pos)
	}
	if *timeout <= 0 {
		return c.usageError(fs, "-timeout must be positive")
	}
	ru, err := parseRedirectURL(*redirect)
	if err != nil {
		return c.usageError(fs, "-redirect-url: %v", err)
	}
	if err := f.check(); err != nil {
		return c.usageError(fs, "%v", err)
	}

	tr := newHTTPTransport()
	defer tr.CloseIdleConnections()
	cfg := f.config(c.getenv, &http.Client{Transport: tr, Timeout: endpointTimeout})
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return c.usageError(fs, "missing client credentials: set -client-id and -client-secret, or %s and %s", envClientID, envClientSecret)
	}
	path, err := f.storePath()
	if err != nil {
		return c.fail(fs, err)
	}
	store := &pandadocauth.FileStore{Path: path}

	state, err := randomState()
	if err != nil {
		return c.fail(fs, err)
	}
	// PKCE: a code that leaks from the redirect is useless without the
	// verifier, which never leaves this process but for the exchange.
	verifier := oauth2.GenerateVerifier()
	ln, err := net.Listen("tcp", ru.Host)
	if err != nil {
		return c.fail(fs, fmt.Errorf("cannot listen for the redirect on %s (is another login running?): %w", ru.Host, err))
	}
	cfg.RedirectURL = *redirect
	if ru.Port() == "0" {
		// The redirect URL names the port the system picked.
		u := *ru
		u.Host = net.JoinHostPort(ru.Hostname(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		cfg.RedirectURL = u.String()
	}
	cb := &callback{
		path:     ru.Path,
		state:    state,
		accepted: make(chan struct{}),
		result:   make(chan callbackResult, 1),
		ignored: func() {
			fmt.Fprintln(c.stderr, "Ignored a redirect whose state does not belong to this login; still waiting.")
		},
		finish: func(code string) (*oauth2.Token, error) {
			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				return nil, fmt.Errorf("exchanging the authorization code: %w", err)
			}
			if err := store.Save(ctx, tok); err != nil {
				return nil, fmt.Errorf("saving the token: %w", err)
			}
			return tok, nil
		},
	}
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()

	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
	if *noBrowser {
		fmt.Fprintf(c.stderr, "To log in to PandaDoc, open this URL in a browser:\n\n    %s\n\n", authURL)
	} else {
		fmt.Fprintf(c.stderr, "Opening the browser to log in to PandaDoc. If it does not open, visit:\n\n    %s\n\n", authURL)
	}
	fmt.Fprintf(c.stderr, "Waiting for PandaDoc to redirect to %s (timeout %v)...\n", cfg.RedirectURL, *timeout)
	if !*noBrowser {
		c.openBrowser(authURL)
	}

	var res callbackResult
	timer := time.NewTimer(*timeout)
	select {
	case <-cb.accepted:
		// The redirect has come: wait for the exchange, which the
		// token endpoint's timeout bounds, whatever -timeout says.
		res = <-cb.result
	case <-timer.C:
		res = cb.end(fmt.Errorf("timed out after %v waiting for the browser to come back to %s", *timeout, cfg.RedirectURL))
	case <-ctx.Done():
		res = cb.end(fmt.Errorf("interrupted while waiting for the browser: %w", ctx.Err()))
	}
	timer.Stop()

	// Stop listening; let the page reach the browser, then close what
	// is left.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	cancel()
	<-served

	if res.err != nil {
		return c.fail(fs, res.err)
	}
	fmt.Fprintf(c.stderr, "Logged in. The token is saved in %s", path)
	if !res.tok.Expiry.IsZero() {
		fmt.Fprintf(c.stderr, "; the access token expires %s", res.tok.Expiry.Local().Format(expiryLayout))
	}
	fmt.Fprintln(c.stderr, ".")
	fmt.Fprintf(c.stderr, "To use it from Go, give a TokenSource this Store:\n\n    &pandadocauth.FileStore{Path: %q}\n\n", path)
	return exitOK
}

// expiryLayout is how login prints the access token's expiry: local
// time, with its zone's abbreviation and offset.
const expiryLayout = "2006-01-02 15:04:05 MST (UTC-07:00)"

// parseRedirectURL checks that u is an http URL on a loopback host with
// an explicit port, where login can listen.
func parseRedirectURL(u string) (*url.URL, error) {
	ru, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	if ru.Scheme != "http" {
		return nil, fmt.Errorf("%q is not an http:// URL", u)
	}
	if !isLoopbackHost(ru.Hostname()) {
		return nil, fmt.Errorf("%q is not on a loopback host (127.0.0.1, [::1] or localhost)", u)
	}
	if ru.Port() == "" {
		return nil, fmt.Errorf("%q needs an explicit port, the one registered in PandaDoc", u)
	}
	if ru.Path == "" {
		ru.Path = "/"
	}
	return ru, nil
}

// randomState returns a fresh, unguessable state parameter.
func randomState() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating the state parameter: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// callbackResult is the outcome of the redirect.
type callbackResult struct {
	tok *oauth2.Token
	err error
}

// callback serves the redirect URL. It accepts one redirect: the first
// request that carries this login's state, whatever its outcome. A
// request with another state (or none) is answered 400 and ignored: it
// does not belong to this login, so it may not end it, or an attacker or
// a stale browser tab could. Requests elsewhere get 404 and do not
// count.
type callback struct {
	path    string
	state   string
	finish  func(code string) (*oauth2.Token, error) // exchange and save
	ignored func()                                   // called for a redirect with the wrong state

	taken    atomic.Bool         // set by the accepted request, or by end
	accepted chan struct{}       // closed when the redirect arrives
	result   chan callbackResult // its outcome; buffered, sent once
}

// end ends the wait for the redirect with err, unless a redirect has
// just been accepted: then its outcome is the one to report.
func (cb *callback) end(err error) callbackResult {
	if cb.taken.CompareAndSwap(false, true) {
		return callbackResult{err: err}
	}
	return <-cb.result
}

func (cb *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != cb.path {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if !q.Has("state") && !q.Has("code") && !q.Has("error") {
		writePage(w, http.StatusBadRequest, "Nothing to do here",
			"This address receives PandaDoc's redirect after login. Start the login from the terminal.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(cb.state)) != 1 {
		writePage(w, http.StatusBadRequest, "Wrong login",
			"This redirect does not belong to the login waiting in the terminal (state mismatch), so it was ignored. "+
				"Use the link that the terminal printed.")
		if cb.ignored != nil {
			cb.ignored()
		}
		return
	}
	if !cb.taken.CompareAndSwap(false, true) {
		writePage(w, http.StatusConflict, "Login ended", "This login has ended. Start a new one from the terminal.")
		return
	}
	close(cb.accepted)

	var res callbackResult
	switch {
	case q.Get("error") == "access_denied":
		res.err = errConsentDenied
	case q.Get("error") != "":
		res.err = fmt.Errorf("PandaDoc answered %s", describeError(q.Get("error"), q.Get("error_description")))
	case q.Get("code") == "":
		res.err = errNoCode
	default:
		res.tok, res.err = cb.finish(q.Get("code"))
	}

	if res.err != nil {
		writePage(w, http.StatusBadRequest, "Login failed", "Login failed: "+res.err.Error()+".")
	} else {
		writePage(w, http.StatusOK, "Logged in", "Logged in to PandaDoc. You can close this tab and return to the terminal.")
	}
	cb.result <- res
}

// describeError quotes an OAuth error code and description, shortened.
func describeError(code, desc string) string {
	const maxLen = 200
	s := fmt.Sprintf("%q", code)
	if desc != "" {
		if len(desc) > maxLen {
			desc = desc[:maxLen] + "…"
		}
		s += fmt.Sprintf(" (%q)", desc)
	}
	return s
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>pandadoc-oauth: {{.Title}}</title>
<body style="font-family: sans-serif; margin: 3em">
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</body>
</html>
`))

// writePage answers a short HTML page.
func writePage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	page.Execute(w, struct{ Title, Message string }{title, message})
}

// startBrowser opens url in the user's browser, if it can; errors are
// ignored, since the URL is printed too.
func startBrowser(url string) {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if cmd.Start() == nil {
		go cmd.Wait() // reap it
	}
}

// isLoopbackHost reports whether host names the local machine.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
