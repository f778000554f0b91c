package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gopandadoc/pandadocauth"
)

const apiUsage = `Usage: pandadoc-oauth api [flags] METHOD PATH

pandadoc-oauth api sends one authenticated request to the PandaDoc API, such as

	pandadoc-oauth api GET /public/v1/documents
	pandadoc-oauth api POST /public/v1/documents -d @document.json

and prints the status line to standard error and the body to standard
output, indented when it is JSON. The exit status is 1 when the answer is
not 2xx. The request is authenticated with the saved OAuth token, which is
refreshed (and the request sent again) if the API rejects it, or with an
API key given by -api-key or $` + envAPIKey + `.
`

// countArgs says how many arguments n is, in words: "no arguments",
// "1 argument", "3 arguments".
func countArgs(n int) string {
	switch n {
	case 0:
		return "no arguments"
	case 1:
		return "1 argument"
	}
	return fmt.Sprintf("%d arguments", n)
}

// maxResponseBytes bounds how much of an answer is read.
const maxResponseBytes = 64 << 20

// headerFlag collects repeated -H flags.
type headerFlag []string

func (h *headerFlag) String() string { return strings.Join(*h, ", ") }

func (h *headerFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return errors.New(`want "Name: value"`)
	}
	*h = append(*h, v)
	return nil
}

func (c *cli) api(ctx context.Context, args []string) int {
	fs := c.newFlagSet("api")
	var f commonFlags
	f.register(fs)
	data := fs.String("d", "", "request `body`, sent as application/json; @FILE reads a file, - reads standard input")
	var headers headerFlag
	fs.Var(&headers, "H", "extra request `header` \"Name: value\" (repeatable); not Authorization, which the command sets")
	apiKey := fs.String("api-key", "", "authenticate with this PandaDoc API `key` instead of the OAuth token (default $"+envAPIKey+")")
	timeout := fs.Duration("timeout", time.Minute, "give up on the request after this `duration`")
	verbose := fs.Bool("v", false, "log token refreshes to standard error")
	pos, code, ok := c.parse(fs, apiUsage, args, true)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		return c.usageError(fs, "want METHOD and PATH, got %s", countArgs(len(pos)))
	}
	if err := f.check(); err != nil {
		return c.usageError(fs, "%v", err)
	}
	method, path := strings.ToUpper(pos[0]), pos[1]
	if !strings.HasPrefix(path, "/") {
		return c.usageError(fs, "PATH %q must start with /", path)
	}
	if *timeout <= 0 {
		return c.usageError(fs, "-timeout must be positive")
	}
	var body []byte
	if isSet(fs, "d") {
		var err error
		if body, err = c.readBody(*data); err != nil {
			return c.fail(fs, err)
		}
	}
	var rdr io.Reader
	if body != nil {
		// A bytes.Reader sets GetBody, so the request can be sent
		// again after a refresh.
		rdr = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.apiBase()+path, rdr)
	if err != nil {
		return c.usageError(fs, "%v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	key := cmp.Or(*apiKey, c.getenv(envAPIKey))
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if strings.EqualFold(name, "Authorization") {
			// Never echo the value: it is a credential.
			auth := "the saved OAuth token"
			if key != "" {
				auth = "the API key"
			}
			fmt.Fprintf(c.stderr, "%s: warning: -H %s is not sent: the request is authenticated with %s, which replaces it\n", fs.Name(), name, auth)
			continue
		}
		req.Header.Add(name, strings.TrimSpace(value))
	}

	tr := newHTTPTransport()
	defer tr.CloseIdleConnections()
	cfg := f.config(c.getenv, &http.Client{Transport: tr, Timeout: endpointTimeout})
	var (
		rt    http.RoundTripper
		store *recordingStore
	)
	noCredentials := false
	if key != "" {
		rt = &pandadocauth.APIKeyTransport{Key: key, Base: tr}
	} else {
		path, err := f.storePath()
		if err != nil {
			return c.fail(fs, err)
		}
		store = &recordingStore{FileStore: &pandadocauth.FileStore{Path: path}}
		src, err := storedSource(ctx, cfg, store)
		if err != nil {
			return c.fail(fs, err)
		}
		if *verbose {
			src.Logger = slog.New(slog.NewTextHandler(c.stderr, nil))
		}
		// Get the token first, so that a failed refresh is reported
		// as such rather than as a failed request.
		if _, err := freshToken(ctx, src, false); err != nil {
			return c.fail(fs, explain(err, cfg))
		}
		if missingCredentials(cfg) != nil {
			// A refresh after a 401 would be refused (invalid_client):
			// the 401 comes back as it is.
			noCredentials = true
			rt = &pandadocauth.Transport{Source: noRefresh{src}, Base: tr}
		} else {
			rt = &pandadocauth.Transport{Source: src, Base: tr}
		}
	}
	client := &http.Client{Transport: rt, Timeout: *timeout}

	resp, err := client.Do(req)
	if err != nil {
		if store != nil {
			err = explain(err, cfg)
		}
		return c.fail(fs, err)
	}
	defer resp.Body.Close()
	fmt.Fprintf(c.stderr, "%s %s\n", resp.Proto, resp.Status)
	status := exitOK
	if err := writeBody(c.stdout, resp); err != nil {
		fmt.Fprintf(c.stderr, "%s: reading the answer: %v\n", fs.Name(), err)
		status = exitFail
	}
	if store != nil {
		if err := store.err(); err != nil {
			fmt.Fprintf(c.stderr, "%s: the token was refreshed but not saved, so the next refresh may fail: %v\n", fs.Name(), err)
			status = exitFail
		}
	}
	if resp.StatusCode/100 != 2 {
		if resp.StatusCode == http.StatusUnauthorized {
			if noCredentials {
				fmt.Fprintf(c.stderr, "%s: the API rejected the token, and %v\n", fs.Name(), missingCredentials(cfg))
			} else if store != nil {
				fmt.Fprintf(c.stderr, "%s: the API rejected the token even after a refresh: run pandadoc-oauth login again\n", fs.Name())
			} else {
				fmt.Fprintf(c.stderr, "%s: the API rejected the API key\n", fs.Name())
			}
		}
		status = exitFail
	}
	return status
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// readBody returns the body -d describes: literal text, @FILE or - for
// standard input.
func (c *cli) readBody(d string) ([]byte, error) {
	switch {
	case d == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return nil, fmt.Errorf("reading the body from standard input: %w", err)
		}
		return b, nil
	case strings.HasPrefix(d, "@"):
		b, err := os.ReadFile(d[1:])
		if err != nil {
			return nil, fmt.Errorf("reading the body: %w", err)
		}
		return b, nil
	}
	return []byte(d), nil
}

// writeBody copies the body of resp to w, indented when it is JSON.
func writeBody(w io.Writer, resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	if isJSON(resp.Header.Get("Content-Type"), b) {
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") == nil {
			out.WriteByte('\n')
			_, err := out.WriteTo(w)
			return err
		}
	}
	_, err = w.Write(b)
	return err
}

// isJSON reports whether a body of the given media type should be
// printed as JSON.
func isJSON(contentType string, b []byte) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		return true
	}
	return mt == "" && json.Valid(b)
}
