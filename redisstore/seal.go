package redisstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/gopandadoc/pandadocauth/internal/seal"
)

// sealedPrefix marks a value sealed with an encryption key, followed by
// base64 of nonce and ciphertext.
const sealedPrefix = "redisstore-aes-gcm:v1:"

// ErrEncrypted means the stored token is encrypted and the Store or Keyed
// has no encryption key to open it.
var ErrEncrypted = errors.New("the stored token is encrypted and EncryptionKey is not set")

// AESKey is an AES key, 16, 24 or 32 bytes long, for the EncryptionKey
// and EncryptionKeys of Store and Keyed. A []byte converts to it
// implicitly. It never shows its bytes: fmt (every verb), encoding/json
// and log/slog print "[REDACTED]".
type AESKey = seal.Key

// sealer returns the Sealer of the encryption keys: EncryptionKey
// first, then EncryptionKeys. A key of the wrong length is an error.
func (r tokens) sealer() (*seal.Sealer, error) {
	keys := make([][]byte, 0, 1+len(r.encKeys))
	keys = append(keys, r.encKey)
	for _, k := range r.encKeys {
		keys = append(keys, k)
	}
	sl, err := seal.New(sealedPrefix, keys...)
	if err != nil {
		return nil, fmt.Errorf("redisstore: encryption keys (EncryptionKey is key 1, then EncryptionKeys): %w", err)
	}
	return sl, nil
}

// additionalData binds a sealed value to its grant and field, so that
// it cannot be moved to another grant or field.
func additionalData(key, field string) []byte {
	return []byte("pandadocauth/redisstore\x00" + field + "\x00" + key)
}

// open reverses sl.Seal for key's token. Values stored without
// encryption are returned as they are.
func open(sl *seal.Sealer, key, v, field string) (string, error) {
	plain, err := sl.Open(v, additionalData(key, field))
	switch {
	case errors.Is(err, seal.ErrNoKey):
		return "", fmt.Errorf("redisstore: loading token: %w", ErrEncrypted)
	case errors.Is(err, seal.ErrWrongKey):
		return "", fmt.Errorf("redisstore: loading token: decrypting %s: %w", field, err)
	case err != nil:
		return "", fmt.Errorf("redisstore: loading token: %s: %w", field, err)
	}
	return plain, nil
}

// String describes the Store without its keys: key prefix, grant key
// and how many encryption keys it has.
func (s *Store) String() string {
	if s == nil {
		return "redisstore.Store(nil)"
	}
	n := len(s.EncryptionKeys)
	if len(s.EncryptionKey) > 0 {
		n++
	}
	return fmt.Sprintf("redisstore.Store{Prefix: %q, Key: %q, encryption keys: %d}", s.Prefix, s.Key, n)
}

// GoString is like String, for the %#v verb.
func (s *Store) GoString() string { return s.String() }

// Format writes String whatever the verb, so that no verb prints the
// keys or the client's password.
func (s *Store) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// LogValue is like String, for log/slog.
func (s *Store) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes what String shows, so that neither the keys nor
// the client (and its password) are encoded.
func (s *Store) MarshalJSON() ([]byte, error) {
	n := len(s.EncryptionKeys)
	if len(s.EncryptionKey) > 0 {
		n++
	}
	return json.Marshal(struct {
		Prefix         string
		Key            string
		EncryptionKeys int
	}{s.Prefix, s.Key, n})
}

// String describes the Keyed without its keys: key prefix and how many
// encryption keys it has.
func (k *Keyed) String() string {
	if k == nil {
		return "redisstore.Keyed(nil)"
	}
	n := len(k.EncryptionKeys)
	if len(k.EncryptionKey) > 0 {
		n++
	}
	return fmt.Sprintf("redisstore.Keyed{Prefix: %q, encryption keys: %d}", k.Prefix, n)
}

// GoString is like String, for the %#v verb.
func (k *Keyed) GoString() string { return k.String() }

// Format writes String whatever the verb, so that no verb prints the
// keys or the client's password.
func (k *Keyed) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue is like String, for log/slog.
func (k *Keyed) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON encodes what String shows, so that neither the keys nor
// the client (and its password) are encoded.
func (k *Keyed) MarshalJSON() ([]byte, error) {
	n := len(k.EncryptionKeys)
	if len(k.EncryptionKey) > 0 {
		n++
	}
	return json.Marshal(struct {
		Prefix         string
		EncryptionKeys int
	}{k.Prefix, n})
}
