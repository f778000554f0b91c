// Package seal encrypts stored tokens with AES-GCM for the stores of
// pandadocauth's nested modules (pgstore, redisstore), so that they share
// one implementation. Values are sealed with the first of several keys
// and opened with any of them, which lets a key be rotated without
// downtime.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Key is an AES key: 16, 24 or 32 bytes. It never prints or encodes
// its bytes: fmt (every verb), encoding/json and log/slog see
// "[REDACTED]".
type Key []byte

const redacted = "[REDACTED]"

// String returns "[REDACTED]".
func (Key) String() string { return redacted }

// GoString returns "[REDACTED]", for the %#v verb.
func (Key) GoString() string { return redacted }

// Format writes "[REDACTED]" whatever the verb, so that %x or %q do not
// reveal the key either.
func (Key) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// LogValue returns "[REDACTED]", for log/slog.
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes the key as the string "[REDACTED]".
func (Key) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

var (
	// ErrNoKey means a value is sealed and no key is configured.
	ErrNoKey = errors.New("the stored token is encrypted and no encryption key is set")
	// ErrMalformed means a value carries the sealed prefix but is not a
	// sealed value.
	ErrMalformed = errors.New("not a sealed value")
	// ErrWrongKey means no configured key opens a value: it was sealed
	// with another key, or for another grant or field.
	ErrWrongKey = errors.New("no encryption key opens the stored token (wrong key, or a value moved from another grant or field)")
)

// Sealer seals and opens values. One without keys seals nothing: Seal
// returns its input, and Open returns unsealed values as they are and
// ErrNoKey for sealed ones.
type Sealer struct {
	prefix string
	aeads  []cipher.AEAD // aeads[0] seals; all open
}

// New returns a Sealer whose sealed values start with prefix, sealing
// with the first key and opening with any key. A key that is not 16, 24 or 32
// bytes long is an error naming its position (from 1), never its bytes.
// Empty keys are skipped; without any key the Sealer seals nothing.
func New(prefix string, keys ...[]byte) (*Sealer, error) {
	s := &Sealer{prefix: prefix}
	for i, k := range keys {
		if len(k) == 0 {
			continue
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("key %d is %d bytes long; AES needs 16, 24 or 32", i+1, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		s.aeads = append(s.aeads, gcm)
	}
	return s, nil
}

// Seal encrypts v with the first key, binding it to ad (additional data
// that Open must be given again, such as the grant and field). The empty
// string stays empty.
func (s *Sealer) Seal(v string, ad []byte) (string, error) {
	if len(s.aeads) == 0 || v == "" {
		return v, nil
	}
	gcm := s.aeads[0]
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(v)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("encrypting: %w", err)
	}
	out := gcm.Seal(nonce, nonce, []byte(v), ad)
	return s.prefix + base64.RawStdEncoding.EncodeToString(out), nil
}

// Encrypts reports whether s has a key, that is whether Seal encrypts.
func (s *Sealer) Encrypts() bool { return len(s.aeads) > 0 }

// Sealed reports whether v is sealed, that is starts with s's prefix.
func (s *Sealer) Sealed(v string) bool { return strings.HasPrefix(v, s.prefix) }

// Open reverses Seal, trying each key in turn. A value that does not
// start with the Sealer's prefix was stored without encryption and is
// returned as it is. A sealed value with no key configured is ErrNoKey.
func (s *Sealer) Open(v string, ad []byte) (string, error) {
	rest, sealed := strings.CutPrefix(v, s.prefix)
	if !sealed {
		return v, nil
	}
	if len(s.aeads) == 0 {
		return "", ErrNoKey
	}
	b, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil {
		return "", ErrMalformed
	}
	for _, gcm := range s.aeads {
		if len(b) < gcm.NonceSize()+gcm.Overhead() {
			return "", ErrMalformed
		}
		plain, err := gcm.Open(nil, b[:gcm.NonceSize()], b[gcm.NonceSize():], ad)
		if err == nil {
			return string(plain), nil
		}
	}
	return "", ErrWrongKey
}
