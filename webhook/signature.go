package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Errors of this package. Match them with errors.Is; none carries a key,
// a signature or the body.
var (
	// ErrNoSignature means the request has no "signature" query
	// parameter, or an empty one.
	ErrNoSignature = errors.New("webhook: no signature")

	// ErrBadSignature means the signature is not 64 hexadecimal digits,
	// or is not the HMAC-SHA256 of the body under any of the keys.
	ErrBadSignature = errors.New("webhook: bad signature")

	// ErrNoKey means no shared key is configured for the request:
	// Verifier.Keys is empty (and KeyFor unset), KeyFor returned none, or
	// every key given is the empty string. Nothing is accepted without
	// a key.
	ErrNoKey = errors.New("webhook: no shared key configured")

	// ErrTooLarge means the body is larger than Verifier.MaxBody.
	ErrTooLarge = errors.New("webhook: body too large")
)

// Sign returns the signature PandaDoc sends with body when its shared key
// is key: the lowercase hexadecimal HMAC-SHA256 of the raw body, keyed by
// the key's UTF-8 bytes. It is for tests and fakes; pandadoctest signs
// its deliveries the same way.
func Sign(key string, body []byte) string {
	return hex.EncodeToString(mac(key, body))
}

func mac(key string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return m.Sum(nil)
}

// Check reports whether signature is PandaDoc's signature of body under
// one of keys (several during a key rotation). The signature is
// hexadecimal, in either case; it is decoded and compared in constant
// time with hmac.Equal. Empty keys are ignored, and with no key left
// Check fails with ErrNoKey: it never accepts a body because no key is
// set. Otherwise it returns nil, ErrNoSignature or an error wrapping
// ErrBadSignature.
func Check(body []byte, signature string, keys ...string) error {
	if !hasKey(keys) {
		return ErrNoKey
	}
	sigs, err := decodeSignatures([]string{signature})
	if err != nil {
		return err
	}
	_, err = match(body, sigs, keys)
	return err
}

// decodeSignatures decodes the values of the signature parameter (a URL
// may carry it twice, as PandaDoc appends it to a URL that may still
// hold an older "?signature=" of its own), skipping empty ones. It
// fails when none is left: with ErrNoSignature when all were empty, else
// with ErrBadSignature.
func decodeSignatures(values []string) ([][]byte, error) {
	var sigs [][]byte
	var bad error
	for _, s := range values {
		if s == "" {
			continue
		}
		if len(s) != 2*sha256.Size {
			bad = fmt.Errorf("%w: %d characters, want %d hexadecimal digits", ErrBadSignature, len(s), 2*sha256.Size)
			continue
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			bad = fmt.Errorf("%w: not hexadecimal", ErrBadSignature)
			continue
		}
		sigs = append(sigs, b)
	}
	switch {
	case len(sigs) > 0:
		return sigs, nil
	case bad != nil:
		return nil, bad
	}
	return nil, ErrNoSignature
}

// match returns the index in keys of the key under which one of sigs is
// the MAC of body, computing the MAC once per key; empty keys are
// skipped.
func match(body []byte, sigs [][]byte, keys []string) (int, error) {
	n := 0
	for i, k := range keys {
		if k == "" {
			continue
		}
		n++
		want := mac(k, body)
		for _, s := range sigs {
			if hmac.Equal(s, want) {
				return i, nil
			}
		}
	}
	if n == 1 {
		return -1, fmt.Errorf("%w: the body is not signed with the key", ErrBadSignature)
	}
	return -1, fmt.Errorf("%w: the body is not signed with any of the %d keys", ErrBadSignature, n)
}

// hasKey reports whether keys has a key that is not empty.
func hasKey(keys []string) bool {
	for _, k := range keys {
		if k != "" {
			return true
		}
	}
	return false
}
