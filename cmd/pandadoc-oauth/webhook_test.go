package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// The known-answer vector of PandaDoc's webhooks: its example shared
// key, a body and the signature PandaDoc's Python sample computes.
const (
	hookKey  = "587c22285F57883db3ee"
	hookBody = `[{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr"}}]`
	hookSig  = "77d7431f71c8525836002a4e9363f45a1bdab8fecb364316f40cc1fa4b202b5d"
)

// writeFile writes content to a file of the test and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWebhookVerify(t *testing.T) {
	t.Parallel()
	body := writeFile(t, "body.json", hookBody)
	withNewline := writeFile(t, "newline.json", hookBody+"\n")
	quoted, _ := json.Marshal(hookBody)
	asString := writeFile(t, "string.json", string(quoted))
	reindented := writeFile(t, "indented.json", strings.ReplaceAll(hookBody, ",", ", "))
	several := pandadoctest.WebhookBody(
		pandadoctest.RecipientCompleted("doc1", "a@example.com"),
		pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	severalFile := writeFile(t, "several.json", string(several))
	env := map[string]string{envWebhookKey: hookKey}
	tests := []struct {
		name    string
		env     map[string]string
		stdin   string
		args    []string
		code    int
		wantOut []string
		wantErr []string
	}{
		{name: "signature and key from the environment", env: env, args: []string{"-signature", hookSig, body}, code: exitOK,
			wantOut: []string{"signature valid\n", "1 event:\n", "\tdocument_state_changed id=aahcZhiB6pKRbjagoZrrrr\n"}},
		{name: "uppercase signature", env: env, args: []string{"-signature", strings.ToUpper(hookSig), body}, code: exitOK, wantOut: []string{"signature valid"}},
		{name: "signature from the URL", env: env, args: []string{"-url", "https://app.example.com/hook?ws=1&signature=" + hookSig, body}, code: exitOK},
		{name: "URL with the legacy placeholder too", env: env, args: []string{"-url", "https://app.example.com/hook?signature={signature}&signature=" + hookSig, body}, code: exitOK},
		{name: "body from standard input", env: env, stdin: hookBody, args: []string{"-signature", hookSig, "-"}, code: exitOK},
		{name: "key flag over the environment", env: map[string]string{envWebhookKey: "stale-key"}, args: []string{"-key", hookKey, "-signature", hookSig, body}, code: exitOK},
		{name: "two keys, the second signed", args: []string{"-key", "new-key", "-key", hookKey, "-signature", hookSig, body}, code: exitOK,
			wantOut: []string{"signature valid, made with key 2 of 2"}},
		{name: "several events", args: []string{"-key", "k", "-signature", pandadoctest.SignWebhook("k", several), severalFile}, code: exitOK,
			wantOut: []string{"2 events:\n", "\trecipient_completed id=doc1 status=document.sent\n", "\tdocument_state_changed id=doc1 status=document.completed\n"}},
		{name: "wrong key", args: []string{"-key", "wrong-key", "-signature", hookSig, body}, code: exitFail,
			wantErr: []string{"webhook: bad signature: the body is not signed with the key", "hint: the body must be byte for byte"}},
		{name: "wrong keys", args: []string{"-key", "wrong-key", "-key", "another", "-signature", hookSig, body}, code: exitFail,
			wantErr: []string{"not signed with any of the 2 keys"}},
		{name: "malformed signature", env: env, args: []string{"-signature", "abc", body}, code: exitFail, wantErr: []string{"bad signature: 3 characters"}},
		{name: "the URL's well-formed signature is the one reported", env: env, args: []string{"-url", "https://x/?signature={signature}&signature=" + strings.Repeat("0", 64), body},
			code: exitFail, wantErr: []string{"not signed with the key"}},
		{name: "a newline added to the file", env: env, args: []string{"-signature", hookSig, withNewline}, code: exitFail,
			wantErr: []string{"hint: the body without its final newline matches"}},
		{name: "request_body saved as a JSON string", env: env, args: []string{"-signature", hookSig, asString}, code: exitFail,
			wantErr: []string{"hint: the body decoded from its JSON string matches"}},
		{name: "re-indented JSON", env: env, args: []string{"-signature", hookSig, reindented}, code: exitFail, wantErr: []string{"bad signature"}},
		{name: "no such file", env: env, args: []string{"-signature", hookSig, filepath.Join(t.TempDir(), "missing.json")}, code: exitFail, wantErr: []string{"reading the body"}},
		{name: "no key", args: []string{"-signature", hookSig, body}, code: exitUsage, wantErr: []string{"no shared key: set -key or PANDADOC_WEBHOOK_KEY"}},
		{name: "only an empty key", args: []string{"-key", "", "-signature", webhookSign("", hookBody), body}, code: exitFail, wantErr: []string{"no shared key configured"}},
		{name: "no signature", env: env, args: []string{body}, code: exitUsage, wantErr: []string{"give the delivery's signature"}},
		{name: "both", env: env, args: []string{"-signature", hookSig, "-url", "https://x/?signature=" + hookSig, body}, code: exitUsage, wantErr: []string{"not both"}},
		{name: "URL without a signature", env: env, args: []string{"-url", "https://x/hook?ws=1", body}, code: exitUsage, wantErr: []string{"-url has no signature parameter"}},
		{name: "no body file", env: env, args: []string{"-signature", hookSig}, code: exitUsage, wantErr: []string{"want BODY-FILE, got no arguments"}},
		{name: "two body files", env: env, args: []string{"-signature", hookSig, body, body}, code: exitUsage, wantErr: []string{"got 2 arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmdInput(t, tt.env, tt.stdin, append([]string{"webhook-verify"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			testutil.AssertNoSecret(t, "the output", stdout+stderr, hookKey, "wrong-key", "stale-key", "new-key")
		})
	}
}

func webhookSign(key, body string) string { return pandadoctest.SignWebhook(key, []byte(body)) }

func TestWebhookVerifyHelp(t *testing.T) {
	t.Parallel()
	env := map[string]string{envWebhookKey: hookKey}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"\twebhook-verify  check a saved webhook body"}},
		{[]string{"help", "webhook-verify"}, []string{"Usage: pandadoc-oauth webhook-verify [flags] BODY-FILE", "-key key", "-signature signature", "-url URL"}},
		{[]string{"webhook-verify", "-h"}, []string{"Usage: pandadoc-oauth webhook-verify", "$PANDADOC_WEBHOOK_KEY"}},
	} {
		code, stdout, stderr := runCmd(t, env, tt.args...)
		if code != exitOK {
			t.Errorf("%q: exit status %d; stderr:\n%s", tt.args, code, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("%q: usage lacks %q:\n%s", tt.args, w, stdout)
			}
		}
		for _, line := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "Pandadoc-oauth") || strings.HasPrefix(strings.TrimSpace(line), "Webhook-verify") {
				t.Errorf("%q: a line starts with a capitalised command name: %q", tt.args, line)
			}
		}
		testutil.AssertNoSecret(t, "usage", stdout+stderr, hookKey)
	}
}
