// Package msgcrypt implements WeChat's message encryption (the scheme of
// WeChat's WXBizMsgCrypt samples), which protects the messages WeChat
// pushes to a server: an Open Platform component's authorization events
// (component_verify_ticket, authorized, updateauthorized, unauthorized) and
// the messages of official accounts in safe mode.
//
// The scheme, as WeChat documents it:
//
//   - the AES key is the 43-character EncodingAESKey with "=" appended,
//     base64-decoded: 32 bytes, for AES-256-CBC with the IV equal to the
//     key's first 16 bytes;
//   - the plaintext is 16 random bytes, the message length as 4 bytes big
//     endian, the message (UTF-8 XML) and the receiving AppID, padded with
//     PKCS#7 to a multiple of 32 bytes (not the AES block size); the
//     ciphertext travels base64-encoded;
//   - msg_signature is the hex SHA-1 of the lexically sorted concatenation
//     of the token, the timestamp, the nonce and the base64 ciphertext.
//
// A Crypter encrypts and decrypts for one (token, EncodingAESKey, AppID).
// ParseEvent reads a decrypted authorization event; CheckTimestamp refuses
// pushes whose timestamp is far from now, half of a replay check (the other
// half, remembering nonces, needs storage shared by every replica and
// belongs to the receiver).
//
// Errors are sentinel values tested with errors.Is. None of them carries a
// key, a token, a ciphertext or a plaintext. The package keeps no global
// state and never logs.
package msgcrypt
