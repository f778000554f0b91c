package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gopandadoc/pandadocauth"
)

const tokenUsage = `Usage: pandadoc-oauth token [flags]

pandadoc-oauth token prints a valid access token of the saved grant, for example for
curl -H "Authorization: Bearer $(pandadoc-oauth token)". A token that
has expired or is about to is refreshed first, and the new token, with
its refresh token (a new one if PandaDoc rotated it), is saved.

With -json it prints the token as JSON, without the refresh token unless
-with-refresh-token is given.
`

// tokenJSON is the token as -json prints it.
type tokenJSON struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Expiry       string `json:"expiry,omitempty"` // RFC 3339
}

func (c *cli) token(ctx context.Context, args []string) int {
	fs := c.newFlagSet("token")
	var f commonFlags
	f.register(fs)
	asJSON := fs.Bool("json", false, "print the token as JSON")
	withRefresh := fs.Bool("with-refresh-token", false, "with -json, include the refresh token (implies -json)")
	force := fs.Bool("refresh", false, "refresh the token even if it looks valid, for example after a revocation")
	verbose := fs.Bool("v", false, "log token refreshes to standard error")
	pos, code, ok := c.parse(fs, tokenUsage, args, false)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(fs, "unexpected arguments %q", pos)
	}
	if err := f.check(); err != nil {
		return c.usageError(fs, "%v", err)
	}

	tr := newHTTPTransport()
	defer tr.CloseIdleConnections()
	cfg := f.config(c.getenv, &http.Client{Transport: tr, Timeout: endpointTimeout})
	path, err := f.storePath()
	if err != nil {
		return c.fail(fs, err)
	}
	store := &recordingStore{FileStore: &pandadocauth.FileStore{Path: path}}
	src, err := storedSource(ctx, cfg, store)
	if err != nil {
		return c.fail(fs, err)
	}
	if *verbose {
		src.Logger = slog.New(slog.NewTextHandler(c.stderr, nil))
	}
	tok, err := freshToken(ctx, src, *force)
	if err != nil {
		return c.fail(fs, explain(err, cfg))
	}
	if err := store.err(); err != nil {
		return c.fail(fs, fmt.Errorf("the token was refreshed but not saved, so the next refresh may fail: %w", err))
	}

	if !*asJSON && !*withRefresh {
		fmt.Fprintln(c.stdout, tok.AccessToken)
		return exitOK
	}
	out := tokenJSON{
		AccessToken: tok.AccessToken,
		TokenType:   tok.Type(),
	}
	if !tok.Expiry.IsZero() {
		out.Expiry = tok.Expiry.Format(time.RFC3339)
	}
	if *withRefresh {
		out.RefreshToken = tok.RefreshToken
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return c.fail(fs, err)
	}
	fmt.Fprintf(c.stdout, "%s\n", b)
	return exitOK
}
