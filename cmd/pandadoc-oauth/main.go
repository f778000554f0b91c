// Pandadoc-oauth logs in to PandaDoc with OAuth 2.0, prints access tokens
// and sends authenticated requests to the PandaDoc API, with the
// pandadocauth package. Its demo command runs concurrent traffic against
// an in-process fake PandaDoc, offline, to show how pandadocauth and
// golang.org/x/oauth2 behave when tokens expire, are revoked, or cannot be
// refreshed at once, and when the tokens of many workspaces expire
// together; with -v it prints the metrics a pandadocauth.Observer counted.
//
// Install it with
//
//	go install github.com/gopandadoc/pandadocauth/cmd/pandadoc-oauth@latest
//
// Usage:
//
//	pandadoc-oauth <command> [flags] [arguments]
//
// The commands are:
//
//	login   log in through the browser and save the token
//	token   print a valid access token, refreshing it if needed
//	api     send one authenticated request to the PandaDoc API
//	demo    run concurrent traffic against an in-process fake PandaDoc
//	webhook-verify  check a saved webhook body against its signature and a shared key
//
// The application's credentials come from -client-id and -client-secret,
// or from PANDADOC_CLIENT_ID and PANDADOC_CLIENT_SECRET. The token is kept
// in pandadoc-oauth/token.json under the user's configuration directory
// ($XDG_CONFIG_HOME or ~/.config on Linux), with mode 0600, unless -store
// names another file. Run "pandadoc-oauth <command> -h" for a command's
// flags.
//
// Exit status: 0 on success, 1 on failure (including an API answer other
// than 2xx), 2 on a usage error.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// Defaults of the shared flags.
const (
	defaultBaseURL = "https://api.pandadoc.com"
	storeDir       = "pandadoc-oauth"
	storeFile      = "token.json"
)

// Environment variables read for credentials.
const (
	envClientID     = "PANDADOC_CLIENT_ID"
	envClientSecret = "PANDADOC_CLIENT_SECRET"
	envAPIKey       = "PANDADOC_API_KEY"
)

// endpointTimeout bounds each request to the token endpoint.
const endpointTimeout = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program name) and returns
// the exit status. It reads the environment through getenv only, so tests
// can drive every command in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, openBrowser: startBrowser}
	return c.run(ctx, args)
}

// cli is one invocation of the command: its standard streams, its
// environment and the way it opens a browser.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	// openBrowser shows url in the user's browser, ignoring failures.
	openBrowser func(url string)
}

// command is a subcommand.
type command struct {
	name    string
	summary string
	run     func(c *cli, ctx context.Context, args []string) int
}

// commands lists the subcommands in the order the usage text shows them.
var commands = []command{
	{"login", "log in through the browser and save the token", (*cli).login},
	{"token", "print a valid access token, refreshing it if needed", (*cli).token},
	{"api", "send one authenticated request to the PandaDoc API", (*cli).api},
	{"demo", "run concurrent traffic against an in-process fake PandaDoc", (*cli).demo},
	{"webhook-verify", "check a saved webhook body against its signature and a shared key", (*cli).webhookVerify},
}

const mainUsage = `pandadoc-oauth logs in to PandaDoc with OAuth 2.0 and makes authenticated
requests to the PandaDoc API.

Usage:

	pandadoc-oauth <command> [flags] [arguments]

Commands:

%s
Run "pandadoc-oauth <command> -h" for the flags of a command.

Credentials come from -client-id and -client-secret, or from the
environment: PANDADOC_CLIENT_ID and PANDADOC_CLIENT_SECRET. The token is
kept in pandadoc-oauth/token.json under the user's configuration directory
(mode 0600) unless -store names another file.
`

func (c *cli) usage(w io.Writer) {
	var b strings.Builder
	for _, cmd := range commands {
		fmt.Fprintf(&b, "\t%-14s  %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, mainUsage, b.String())
}

func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		c.usage(c.stdout)
		return exitOK
	case "help":
		if len(args) == 1 {
			c.usage(c.stdout)
			return exitOK
		}
		if len(args) == 2 && lookup(args[1]) != nil {
			return lookup(args[1]).run(c, ctx, []string{"-h"})
		}
		fmt.Fprintf(c.stderr, "pandadoc-oauth help: unknown command %q\n", strings.Join(args[1:], " "))
		return exitUsage
	}
	if len(name) > 1 && name[0] == '-' {
		return c.flagsFirst(ctx, args)
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(c.stderr, "pandadoc-oauth: unknown command %q\nRun \"pandadoc-oauth -h\" for usage.\n", name)
		return exitUsage
	}
	return cmd.run(c, ctx, args[1:])
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// newFlagSet returns a FlagSet for the named command that reports errors
// to standard error and leaves the usage text to parse.
func (c *cli) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("pandadoc-oauth "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {}
	return fs
}

// parse parses a command's args. With interspersed, flags may follow
// positional arguments ("api GET /path -d {}"), until "--". It returns
// the positional arguments, or ok false and the exit status: 0 after -h,
// which prints the usage text to standard output, 2 after a bad flag.
func (c *cli) parse(fs *flag.FlagSet, usage string, args []string, interspersed bool) (pos []string, code int, ok bool) {
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			printUsage(c.stdout, fs, usage)
			return nil, exitOK, false
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "Run \"%s -h\" for usage.\n", fs.Name())
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		consumed := len(args) - len(rest)
		if !interspersed || consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// printUsage writes a command's usage text and its flags to w.
func printUsage(w io.Writer, fs *flag.FlagSet, usage string) {
	fmt.Fprint(w, usage)
	fmt.Fprintf(w, "\nFlags:\n")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// usageError reports a misuse of a command and returns exitUsage.
func (c *cli) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\nRun \"%s -h\" for usage.\n", fs.Name(), fmt.Sprintf(format, args...), fs.Name())
	return exitUsage
}

// fail reports a command's failure and returns exitFail.
func (c *cli) fail(fs *flag.FlagSet, err error) int {
	fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
	return exitFail
}

// commonFlags are the flags of the commands that talk to PandaDoc: the
// application's credentials, the token file and the endpoints.
type commonFlags struct {
	clientID     string
	clientSecret string
	store        string
	baseURL      string
	tokenURL     string
	authURL      string
}

func (f *commonFlags) register(fs *flag.FlagSet) {
	// The defaults of the credentials stay empty so that -h never
	// prints a secret taken from the environment.
	fs.StringVar(&f.clientID, "client-id", "", "application's client `ID` (default $"+envClientID+")")
	fs.StringVar(&f.clientSecret, "client-secret", "", "application's client `secret` (default $"+envClientSecret+", which other users cannot see in the process list)")
	fs.StringVar(&f.store, "store", "", "token `file` (default pandadoc-oauth/token.json in the user's configuration directory)")
	fs.StringVar(&f.baseURL, "base-url", "", "PandaDoc API base `URL`, for a fake or a proxy; the OAuth endpoints default to URL/oauth2/... (default "+defaultBaseURL+")")
	fs.StringVar(&f.tokenURL, "token-url", "", "token endpoint `URL` (default "+pandadocauth.TokenURL+")")
	fs.StringVar(&f.authURL, "auth-url", "", "authorization endpoint `URL` (default "+pandadocauth.AuthURL+")")
}

// config returns the application's Config, taking the credentials the
// flags do not give from the environment. Token-endpoint requests go
// through hc.
func (f *commonFlags) config(getenv func(string) string, hc *http.Client) *pandadocauth.Config {
	cfg := &pandadocauth.Config{
		ClientID:     cmp.Or(f.clientID, getenv(envClientID)),
		ClientSecret: cmp.Or(f.clientSecret, getenv(envClientSecret)),
		TokenURL:     f.tokenURL,
		AuthURL:      f.authURL,
		HTTPClient:   hc,
	}
	if f.baseURL != "" {
		base := strings.TrimSuffix(f.baseURL, "/")
		cfg.TokenURL = cmp.Or(cfg.TokenURL, base+"/oauth2/access_token")
		cfg.AuthURL = cmp.Or(cfg.AuthURL, base+"/oauth2/authorize")
	}
	return cfg
}

// check reports a URL flag that is not an absolute http(s) URL, saying
// what one must look like.
func (f *commonFlags) check() error {
	for _, u := range []struct{ flag, value, example string }{
		{"-base-url", f.baseURL, defaultBaseURL},
		{"-token-url", f.tokenURL, pandadocauth.TokenURL},
		{"-auth-url", f.authURL, pandadocauth.AuthURL},
	} {
		if u.value == "" {
			continue
		}
		pu, err := url.Parse(u.value)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.User != nil || pu.Fragment != "" ||
			(u.flag == "-base-url" && pu.RawQuery != "") {
			return fmt.Errorf("%s %q is not a URL of the form %s: it needs the scheme (https://, or http:// for a local fake) and the host", u.flag, u.value, u.example)
		}
	}
	return nil
}

// apiBase returns the API base URL without a trailing slash.
func (f *commonFlags) apiBase() string {
	return strings.TrimSuffix(cmp.Or(f.baseURL, defaultBaseURL), "/")
}

// storePath returns the token file: -store, else token.json in the
// user's configuration directory.
func (f *commonFlags) storePath() (string, error) {
	if f.store != "" {
		return f.store, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory for the token (%w); set -store", err)
	}
	return filepath.Join(dir, storeDir, storeFile), nil
}

// newHTTPTransport returns a transport of its own for one invocation, so
// that its connections can be closed when the command returns.
func newHTTPTransport() *http.Transport {
	return http.DefaultTransport.(*http.Transport).Clone()
}

// errNotLoggedIn means the token file holds no token.
var errNotLoggedIn = errors.New("not logged in")

// recordingStore is the command's FileStore. It remembers whether the
// last Save failed: the TokenSource then goes on with the token it could
// not save and retries in the background, but the command exits right
// away, so it must tell the user that the newest refresh token (the only
// one that works, with rotation) is not on disk.
type recordingStore struct {
	*pandadocauth.FileStore

	mu      sync.Mutex // guards saveErr
	saveErr error      // result of the last Save
}

// Save saves t and records the result.
func (s *recordingStore) Save(ctx context.Context, t *oauth2.Token) error {
	err := s.FileStore.Save(ctx, t)
	s.mu.Lock()
	s.saveErr = err
	s.mu.Unlock()
	return err
}

// err returns the error of the last Save, if it failed.
func (s *recordingStore) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveErr
}

// minValidity is how long a token the command uses must stay valid;
// one closer to its expiry is refreshed first.
const minValidity = pandadocauth.DefaultEarlyRefresh

// storedSource returns a TokenSource for the grant in the token file. A
// command is a short-lived process, so the TokenSource never refreshes in
// the background (EarlyRefresh < 0): freshToken refreshes before use
// instead, and waits for the new token to be saved.
func storedSource(ctx context.Context, cfg *pandadocauth.Config, store *recordingStore) (*pandadocauth.TokenSource, error) {
	tok, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, fmt.Errorf("%w (no token in %s): run pandadoc-oauth login first", errNotLoggedIn, store.Path)
	}
	return &pandadocauth.TokenSource{
		Config:       cfg,
		Initial:      tok,
		Store:        store,
		EarlyRefresh: -1,
	}, nil
}

// freshToken returns a token from src that stays valid for minValidity
// at least, refreshing it first when it would not (or always, with
// force). The Store is read before a refresh, so a token that another
// process saved meanwhile is adopted instead.
func freshToken(ctx context.Context, src *pandadocauth.TokenSource, force bool) (*oauth2.Token, error) {
	if needsRefresh(src.Initial, force) {
		if err := missingCredentials(src.Config); err != nil {
			return nil, err
		}
	}
	tok, err := src.TokenContext(ctx)
	if err != nil {
		return nil, err
	}
	if force || !tok.Expiry.IsZero() && time.Until(tok.Expiry) < minValidity {
		return src.Refresh(ctx)
	}
	return tok, nil
}

// explain adds to a token error what the user can do about it.
func explain(err error, cfg *pandadocauth.Config) error {
	var re *oauth2.RetrieveError
	switch {
	case errors.Is(err, errNotLoggedIn), errors.Is(err, errMissingCredentials):
		return err
	case cfg.ClientID == "" || cfg.ClientSecret == "":
		return fmt.Errorf("%w\n(a refresh needs the client credentials: set -client-id and -client-secret, or %s and %s)", err, envClientID, envClientSecret)
	case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
		return fmt.Errorf("%w\n(the refresh token no longer works: run pandadoc-oauth login again)", err)
	}
	return err
}
