;; A component importing an interface the host does not provide. Expected:
;; refused at compile, COMPONENT_IMPORT_NOT_ALLOWED naming the import.
(component
  (import "acme:secrets/vault@1.0.0" (instance $vault
    (export "read" (func (param "name" string) (result string))))))
