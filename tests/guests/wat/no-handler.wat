;; A component that imports nothing and exports no HTTP handler. Expected:
;; refused at compile, COMPONENT_NO_HANDLER.
(component)
