-- macro: falco_image
-- description: The image repository of the container a Falco alert is
--    about (output field container.image.repository).
json_get_str(output_fields, 'container.image.repository')
