package webhook_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/webhook"
)

// The known-answer vector: PandaDoc's example shared key, a body, and
// the signature PandaDoc's Python sample computes for them.
const (
	vectorKey  = "587c22285F57883db3ee"
	vectorBody = `[{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr"}}]`
	vectorSig  = "77d7431f71c8525836002a4e9363f45a1bdab8fecb364316f40cc1fa4b202b5d"
)

func TestSignKnownAnswer(t *testing.T) {
	t.Parallel()
	if got := webhook.Sign(vectorKey, []byte(vectorBody)); got != vectorSig {
		t.Errorf("Sign = %s, want %s", got, vectorSig)
	}
	// pandadoctest signs on its own; both must agree with PandaDoc.
	if got := pandadoctest.SignWebhook(vectorKey, []byte(vectorBody)); got != vectorSig {
		t.Errorf("pandadoctest.SignWebhook = %s, want %s", got, vectorSig)
	}
	if err := webhook.Check([]byte(vectorBody), vectorSig, vectorKey); err != nil {
		t.Errorf("Check of the vector: %v", err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-shared-key", "new-shared-key"
	body := []byte(vectorBody)
	tampered := []byte(strings.Replace(vectorBody, "aahcZ", "aahcY", 1))
	other := []byte(`[{"event":"document_deleted","data":{"id":"x"}}]`)
	tests := []struct {
		name string
		body []byte
		sig  string
		keys []string
		want error // nil, or the sentinel the error must match
	}{
		{"known answer", body, vectorSig, []string{vectorKey}, nil},
		{"uppercase hex", body, strings.ToUpper(vectorSig), []string{vectorKey}, nil},
		{"mixed-case hex", body, strings.ToUpper(vectorSig[:32]) + vectorSig[32:], []string{vectorKey}, nil},
		{"wrong key", body, vectorSig, []string{"587c22285F57883db3eF"}, webhook.ErrBadSignature},
		{"key differs in case only", body, vectorSig, []string{strings.ToLower(vectorKey)}, webhook.ErrBadSignature},
		{"two keys, signed with the first", body, webhook.Sign(newKey, body), []string{newKey, oldKey}, nil},
		{"two keys, signed with the second", body, webhook.Sign(oldKey, body), []string{newKey, oldKey}, nil},
		{"two keys, signed with neither", body, vectorSig, []string{newKey, oldKey}, webhook.ErrBadSignature},
		{"tampered body", tampered, vectorSig, []string{vectorKey}, webhook.ErrBadSignature},
		{"signature of another body", body, webhook.Sign(vectorKey, other), []string{vectorKey}, webhook.ErrBadSignature},
		{"body with a trailing newline", append(body, '\n'), vectorSig, []string{vectorKey}, webhook.ErrBadSignature},
		{"empty signature", body, "", []string{vectorKey}, webhook.ErrNoSignature},
		{"63 hex digits", body, vectorSig[:63], []string{vectorKey}, webhook.ErrBadSignature},
		{"65 hex digits", body, vectorSig + "0", []string{vectorKey}, webhook.ErrBadSignature},
		{"not hex", body, strings.Repeat("zz", 32), []string{vectorKey}, webhook.ErrBadSignature},
		{"base64 instead of hex", body, "d9dDH3HIUlg2AAKkTmP0WhvauP7LNkMW9AzB+kogK10=", []string{vectorKey}, webhook.ErrBadSignature},
		{"sha256= prefix", body, "sha256=" + vectorSig, []string{vectorKey}, webhook.ErrBadSignature},
		{"no keys", body, vectorSig, nil, webhook.ErrNoKey},
		{"empty key list", body, vectorSig, []string{}, webhook.ErrNoKey},
		// An unset environment variable gives an empty key: it must not
		// verify a signature made with the empty key.
		{"only an empty key, signed with it", body, webhook.Sign("", body), []string{""}, webhook.ErrNoKey},
		{"an empty key beside a real one", body, webhook.Sign("", body), []string{"", vectorKey}, webhook.ErrBadSignature},
		{"an empty key beside the right one", body, vectorSig, []string{"", vectorKey}, nil},
		{"no keys and no signature", body, "", nil, webhook.ErrNoKey},
		{"empty body, signed", []byte{}, webhook.Sign(vectorKey, nil), []string{vectorKey}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhook.Check(tt.body, tt.sig, tt.keys...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "webhook: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			secrets := append([]string{tt.sig}, tt.keys...)
			testutil.AssertNoSecret(t, "the error", msg+fmt.Sprintf("%v %+v %#v", err, err, err), secrets...)
		})
	}
}

// TestCheckSentinelsDistinct checks that each sentinel is its own error,
// so that a caller can tell a misconfiguration from a forgery.
func TestCheckSentinelsDistinct(t *testing.T) {
	t.Parallel()
	all := []error{webhook.ErrNoSignature, webhook.ErrBadSignature, webhook.ErrNoKey, webhook.ErrTooLarge, webhook.ErrMalformed}
	for i, a := range all {
		for j, b := range all {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v matches %v", a, b)
			}
		}
	}
}
