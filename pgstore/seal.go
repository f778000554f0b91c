package pgstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/gopandadoc/pandadocauth/internal/seal"
)

// sealedPrefix marks a value sealed with an encryption key, followed by
// base64 of nonce and ciphertext.
const sealedPrefix = "pgstore-aes-gcm:v1:"

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
func (r rows) sealer() (*seal.Sealer, error) {
	keys := make([][]byte, 0, 1+len(r.keys))
	keys = append(keys, r.key)
	for _, k := range r.keys {
		keys = append(keys, k)
	}
	sl, err := seal.New(sealedPrefix, keys...)
	if err != nil {
		// Positions count EncryptionKey as key 1, which the message
		// says, so that a bad key can be found.
		return nil, fmt.Errorf("pgstore: encryption keys (EncryptionKey is key 1, then EncryptionKeys): %w", err)
	}
	return sl, nil
}

// additionalData binds a sealed value to its grant and column, so that
// it cannot be moved to another row or column.
func additionalData(key, column string) []byte {
	return []byte("pandadocauth/pgstore\x00" + column + "\x00" + key)
}

// open reverses sl.Seal for key's row. Values stored without encryption
// are returned as they are.
func open(sl *seal.Sealer, key, v, column string) (string, error) {
	plain, err := sl.Open(v, additionalData(key, column))
	switch {
	case errors.Is(err, seal.ErrNoKey):
		return "", fmt.Errorf("pgstore: loading token: %w", ErrEncrypted)
	case errors.Is(err, seal.ErrWrongKey):
		return "", fmt.Errorf("pgstore: loading token: decrypting %s: %w", column, err)
	case err != nil:
		return "", fmt.Errorf("pgstore: loading token: %s: %w", column, err)
	}
	return plain, nil
}

// String describes the Store without its keys: table, grant key and how
// many encryption keys it has.
func (s *Store) String() string {
	if s == nil {
		return "pgstore.Store(nil)"
	}
	n := len(s.EncryptionKeys)
	if len(s.EncryptionKey) > 0 {
		n++
	}
	return fmt.Sprintf("pgstore.Store{Table: %q, Key: %q, encryption keys: %d}", s.Table, s.Key, n)
}

// GoString is like String, for the %#v verb.
func (s *Store) GoString() string { return s.String() }

// Format writes String whatever the verb, so that no verb prints the
// keys.
func (s *Store) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// LogValue is like String, for log/slog.
func (s *Store) LogValue() slog.Value { return slog.StringValue(s.String()) }

// String describes the Keyed without its keys: table and how many
// encryption keys it has.
func (k *Keyed) String() string {
	if k == nil {
		return "pgstore.Keyed(nil)"
	}
	n := len(k.EncryptionKeys)
	if len(k.EncryptionKey) > 0 {
		n++
	}
	return fmt.Sprintf("pgstore.Keyed{Table: %q, encryption keys: %d}", k.Table, n)
}

// GoString is like String, for the %#v verb.
func (k *Keyed) GoString() string { return k.String() }

// Format writes String whatever the verb, so that no verb prints the
// keys.
func (k *Keyed) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue is like String, for log/slog.
func (k *Keyed) LogValue() slog.Value { return slog.StringValue(k.String()) }
