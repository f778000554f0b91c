package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// invocation is one run of the command in-process.
type invocation struct {
	c              *cli
	stdout, stderr *testutil.Buffer
}

// newInvocation returns a command with the environment env and standard
// input stdin, whose browser must not be opened.
func newInvocation(t *testing.T, env map[string]string, stdin string) *invocation {
	t.Helper()
	inv := &invocation{stdout: &testutil.Buffer{}, stderr: &testutil.Buffer{}}
	inv.c = &cli{
		stdin:  strings.NewReader(stdin),
		stdout: inv.stdout,
		stderr: inv.stderr,
		getenv: func(k string) string { return env[k] },
		openBrowser: func(url string) {
			t.Errorf("browser opened for %s", url)
		},
	}
	return inv
}

// start runs args in the background and returns the channel of its exit
// status.
func (inv *invocation) start(args ...string) <-chan int {
	done := make(chan int, 1)
	go func() { done <- inv.c.run(context.Background(), args) }()
	return done
}

// wait waits for the exit status from done.
func wait(t *testing.T, done <-chan int) int {
	t.Helper()
	return testutil.Recv(t, done, "the command to return")
}

// runCmd runs args with env and returns the exit status and output.
func runCmd(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCmdInput(t, env, "", args...)
}

// runCmdInput is runCmd with stdin as standard input.
func runCmdInput(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	inv := newInvocation(t, env, stdin)
	code = inv.c.run(context.Background(), args)
	return code, inv.stdout.String(), inv.stderr.String()
}

// credentials is an environment with the client credentials of a
// pandadoctest server.
func credentials() map[string]string {
	return map[string]string{
		envClientID:     pandadoctest.DefaultClientID,
		envClientSecret: pandadoctest.DefaultClientSecret,
	}
}

// grant starts a fake PandaDoc with rotation on, and saves a token of a
// new grant to a token file. It returns the server, the file and the
// token.
func grant(t *testing.T, opts ...pandadoctest.Option) (*pandadoctest.Server, string, *oauth2.Token) {
	t.Helper()
	srv := pandadoctest.NewServer(append([]pandadoctest.Option{pandadoctest.WithRotation(true)}, opts...)...)
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "token.json")
	tok := srv.IssueToken()
	saveToken(t, path, tok)
	return srv, path, tok
}

func saveToken(t *testing.T, path string, tok *oauth2.Token) {
	t.Helper()
	if err := (&pandadocauth.FileStore{Path: path}).Save(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
}

func loadToken(t *testing.T, path string) *oauth2.Token {
	t.Helper()
	tok, err := (&pandadocauth.FileStore{Path: path}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok == nil {
		t.Fatalf("no token in %s", path)
	}
	return tok
}

func TestHelp(t *testing.T) {
	t.Parallel()
	env := map[string]string{envClientID: "id", envClientSecret: "s3cr3t-from-env", envAPIKey: "k3y-from-env"}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"Usage:", "login", "token", "api", "demo"}},
		{[]string{"help"}, []string{"Usage:", "login", "token", "api", "demo"}},
		{[]string{"help", "api"}, []string{"Usage: pandadoc-oauth api", "-d body"}},
		{[]string{"login", "-h"}, []string{"Usage: pandadoc-oauth login", "-redirect-url", "-no-browser", "-timeout", "-client-id", "-store", "-base-url", "-token-url", "-auth-url"}},
		{[]string{"token", "-h"}, []string{"Usage: pandadoc-oauth token", "-json", "-with-refresh-token", "-refresh"}},
		{[]string{"api", "-h"}, []string{"Usage: pandadoc-oauth api", "METHOD PATH", "-api-key", "-H header"}},
		{[]string{"api", "GET", "/x", "-h"}, []string{"Usage: pandadoc-oauth api"}},
		{[]string{"demo", "-help"}, []string{"Usage: pandadoc-oauth demo", "-workers", "-latency"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, env, tt.args...)
			if code != exitOK {
				t.Errorf("exit status %d, want 0; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("usage lacks %q:\n%s", w, stdout)
				}
			}
			testutil.AssertNoSecret(t, "usage", stdout+stderr, "s3cr3t", "k3y")
		})
	}
}

// TestHelpWording checks the help texts' wording: a sentence that starts
// with the command's name keeps it lower-case, as typed, and flag
// placeholders are nouns.
func TestHelpWording(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"login", "-h"}, {"token", "-h"}, {"api", "-h"}, {"demo", "-h"}} {
		_, stdout, _ := runCmd(t, nil, args...)
		for _, line := range strings.Split(stdout, "\n") {
			for _, bad := range []string{"Pandadoc-oauth", "Api ", "Login ", "Token ", "Demo "} {
				if strings.HasPrefix(strings.TrimSpace(line), bad) {
					t.Errorf("%q: line starts with %q: %s", args, bad, line)
				}
			}
		}
		if strings.Contains(stdout, " long\n") || strings.Contains(stdout, "-timeout long") {
			t.Errorf("%q: a placeholder reads \"long\":\n%s", args, stdout)
		}
	}
	_, stdout, _ := runCmd(t, nil, "login", "-h")
	if !strings.Contains(stdout, "-timeout duration") {
		t.Errorf("login -h lacks \"-timeout duration\":\n%s", stdout)
	}
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"help"}, strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
	if code != exitOK || !strings.Contains(stdout.String(), "Usage:") {
		t.Errorf("run help = %d, stdout:\n%s", code, stdout.String())
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no command", nil, nil, "Usage:"},
		{"unknown command", nil, []string{"lgoin"}, `unknown command "lgoin"`},
		{"help for unknown command", nil, []string{"help", "nope"}, "unknown command"},
		{"unknown flag", nil, []string{"token", "-nope"}, "flag provided but not defined: -nope"},
		{"bad flag value", nil, []string{"demo", "-workers", "many"}, "invalid value"},
		{"token arguments", nil, []string{"token", "extra"}, "unexpected arguments"},
		{"api without path", nil, []string{"api", "GET"}, "want METHOD and PATH, got 1 argument\n"},
		{"api without arguments", nil, []string{"api"}, "want METHOD and PATH, got no arguments\n"},
		{"api three arguments", nil, []string{"api", "GET", "/a", "/b"}, "want METHOD and PATH, got 3 arguments\n"},
		{"base URL without scheme", nil, []string{"api", "-base-url", "127.0.0.1:1", "GET", "/x"}, `-base-url "127.0.0.1:1" is not a URL of the form https://api.pandadoc.com`},
		{"token base URL without scheme", nil, []string{"token", "-base-url", "127.0.0.1:1"}, `-base-url "127.0.0.1:1" is not a URL of the form https://api.pandadoc.com`},
		{"login base URL without scheme", credentials(), []string{"login", "-base-url", "api.pandadoc.com"}, "needs the scheme"},
		{"base URL with a query", nil, []string{"token", "-base-url", "https://api.pandadoc.com/?x=1"}, "-base-url"},
		{"token URL of another scheme", nil, []string{"token", "-token-url", "ftp://api.pandadoc.com/oauth2/access_token"}, "-token-url"},
		{"auth URL without host", credentials(), []string{"login", "-auth-url", "https:///oauth2/authorize"}, "-auth-url"},
		{"api relative path", nil, []string{"api", "GET", "public/v1/documents"}, "must start with /"},
		{"api bad header", nil, []string{"api", "-H", "nocolon", "GET", "/x"}, "Name: value"},
		{"login without credentials", nil, []string{"login", "-no-browser"}, envClientID},
		{"login https redirect", credentials(), []string{"login", "-redirect-url", "https://127.0.0.1:8765/cb"}, "not an http:// URL"},
		{"login remote redirect", credentials(), []string{"login", "-redirect-url", "http://example.com:8765/cb"}, "loopback"},
		{"login redirect without port", credentials(), []string{"login", "-redirect-url", "http://127.0.0.1/cb"}, "explicit port"},
		{"login zero timeout", credentials(), []string{"login", "-timeout", "0s"}, "-timeout"},
		{"demo workers", nil, []string{"demo", "-workers", "0"}, "-workers"},
		{"demo latency", nil, []string{"demo", "-latency", "1ns"}, "-latency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, tt.env, tt.args...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout not empty:\n%s", stdout)
			}
		})
	}
}

// TestFlagBeforeCommand: a flag before the command is a usage error
// that the flag package words and that says where flags go, not an
// unknown command; "--" ends the flags.
func TestFlagBeforeCommand(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-x"}, "flag provided but not defined: -x\n"},
		{[]string{"--x"}, "flag provided but not defined: -x\n"},
		{[]string{"-store", "token.json", "token"}, "flag provided but not defined: -store\n"},
		{[]string{"--"}, "Usage:"},
	} {
		code, stdout, stderr := runCmd(t, nil, tt.args...)
		if code != exitUsage {
			t.Errorf("%q: exit status %d, want %d", tt.args, code, exitUsage)
		}
		if !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "unknown command") {
			t.Errorf("%q: stderr lacks %q, or says unknown command:\n%s", tt.args, tt.want, stderr)
		}
		if tt.args[0] != "--" && !strings.Contains(stderr, "flags go after the command") {
			t.Errorf("%q: stderr does not say where flags go:\n%s", tt.args, stderr)
		}
		if stdout != "" {
			t.Errorf("%q: stdout not empty:\n%s", tt.args, stdout)
		}
	}
	if code, stdout, _ := runCmd(t, nil, "--", "help"); code != exitOK || !strings.Contains(stdout, "Usage:") {
		t.Errorf("-- help: exit status %d, stdout:\n%s", code, stdout)
	}
	if code, stdout, _ := runCmd(t, nil, "-help=true"); code != exitOK || !strings.Contains(stdout, "Usage:") {
		t.Errorf("-help=true: exit status %d, stdout:\n%s", code, stdout)
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		wantPos []string
		wantD   string
	}{
		{[]string{"GET", "/a"}, []string{"GET", "/a"}, ""},
		{[]string{"-d", "x", "GET", "/a"}, []string{"GET", "/a"}, "x"},
		{[]string{"GET", "-d", "x", "/a"}, []string{"GET", "/a"}, "x"},
		{[]string{"GET", "/a", "-d", "x"}, []string{"GET", "/a"}, "x"},
		{[]string{"GET", "--", "-d", "x"}, []string{"GET", "-d", "x"}, ""},
		{[]string{"-d", "-", "GET", "/a"}, []string{"GET", "/a"}, "-"},
	}
	for _, tt := range tests {
		inv := newInvocation(t, nil, "")
		fs := inv.c.newFlagSet("api")
		d := fs.String("d", "", "")
		pos, _, ok := inv.c.parse(fs, "", tt.args, true)
		if !ok || strings.Join(pos, " ") != strings.Join(tt.wantPos, " ") || *d != tt.wantD {
			t.Errorf("parse(%q) = %q, -d %q, ok %v; want %q, -d %q", tt.args, pos, *d, ok, tt.wantPos, tt.wantD)
		}
	}
}

func TestDefaultStorePath(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("XDG_CONFIG_HOME is read on Linux")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	var f commonFlags
	got, err := f.storePath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "pandadoc-oauth", "token.json"); got != want {
		t.Errorf("storePath = %q, want %q", got, want)
	}

	// token reads the default file.
	srv := pandadoctest.NewServer()
	defer srv.Close()
	tok := srv.IssueToken()
	saveToken(t, got, tok)
	code, stdout, stderr := runCmd(t, nil, "token", "-base-url", srv.URL)
	if code != exitOK || stdout != tok.AccessToken+"\n" {
		t.Errorf("token = %d, %q; stderr:\n%s", code, stdout, stderr)
	}
	fi, err := os.Stat(got)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("token file mode %v, want 0600", mode)
	}
}

// assertPortFree fails t if something still listens on the loopback
// port.
func assertPortFree(t *testing.T, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d is still in use: %v", port, err)
	}
	ln.Close()
}

// TestREADMEFirstSteps checks that the README's first steps match the
// command: the install line, and a Quickstart that reads the very file
// login writes.
func TestREADMEFirstSteps(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"go install ./cmd/pandadoc-oauth", // from a checkout, before the first release
		`&pandadocauth.FileStore{Path: filepath.Join(dir, "` + storeDir + `", "` + storeFile + `")}`,
		"dir, err := os.UserConfigDir()",
		"pandadoc-oauth login",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README lacks %s", want)
		}
	}
	// The Go version the README promises is the go.mod's.
	var goLine string
	for _, line := range strings.Split(string(gomod), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			goLine = strings.TrimSpace(v)
		}
	}
	if goLine == "" || !strings.Contains(string(readme), "`go "+goLine+"`") {
		t.Errorf("README does not state the go.mod's Go version %q", goLine)
	}
}
