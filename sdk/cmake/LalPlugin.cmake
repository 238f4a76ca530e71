# lal_add_plugin(<name> SOURCES <files...> [LINK <targets...>] [OUTPUT_DIRECTORY <dir>] [NO_INSTALL])
#
# Builds a lal plugin: a MODULE library named lib<name>.so, hidden visibility (only the LAL_PLUGIN entry point is
# exported), linked to lal::sdk. The file name is what `plugin:` in a pipeline YAML refers to, so keep it equal to
# the descriptor's name.
function(lal_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LINK" ${ARGN})
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE lal::sdk ${ARG_LINK})
  set_target_properties(${name} PROPERTIES
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  elseif(DEFINED LAL_PLUGIN_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${LAL_PLUGIN_OUTPUT_DIR})
  endif()
  if(DEFINED LAL_PLUGIN_INSTALL_DIR AND NOT ARG_NO_INSTALL)
    install(TARGETS ${name} LIBRARY DESTINATION ${LAL_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
